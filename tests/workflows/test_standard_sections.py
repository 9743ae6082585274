"""The bundles' inference recipe is their config's standard sections (issue 20): ``preprocessing``, ``inferer`` and
``postprocessing``, run the way MONAI Deploy's bundle operator and MONAI Label's ``BundleInferTask`` run them (their
writers left out, the image given as a path or as a loaded volume), give ``pyconv-monai segment``'s mask voxel for
voxel. The clients' own packages are exercised in ``tests/clients``; this test needs none of them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, SaveImaged
from pyconv_monai.transforms import LoadVolume

from tests.conftest import REPO
from tests.workflows.test_inference import CONV, run, shift_weights


def _sections(bundle: str, weights) -> tuple:
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    root = REPO / "bundles" / bundle
    parser.update({"bundle_root": str(root), "network_def": CONV, "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, weights_only=True))
    pre = parser.get_parsed_content("preprocessing")
    post = parser.get_parsed_content("postprocessing")
    return pre, parser.get_parsed_content("inferer"), post, network.eval()


def _infer(pre, inferer, post, network, data: dict) -> np.ndarray:
    inputs = pre(data)
    with torch.no_grad():
        pred = inferer(inputs["image"][None].float(), network)[0]
    return np.asarray(post({**inputs, "pred": pred})["pred"][0]) > 0.5


@pytest.mark.parametrize(
    "bundle, source",
    [
        ("liver_ct_segmentation", "ct_dicom_dcmqi_3slice/dicom"),
        ("lung_ct_segmentation", "ct_nifti_totalseg/example_ct_sm.nii.gz"),
        ("neuron_em_segmentation", "isbi2012_em/train-volume.tif"),
    ],
)
def test_clients_running_the_sections_get_segments_mask(shared_data, tmp_path, bundle, source):
    weights = shift_weights(tmp_path / "w.pt")
    path = shared_data / source
    rows = run(bundle, path, tmp_path / "out", weights, dicom_seg=False)
    written = tmp_path / "out" / rows[0]["mask"]
    if written.suffix == ".tif":
        import tifffile

        expected = np.moveaxis(tifffile.imread(written), 0, -1) > 0
    else:
        expected = np.asarray(nib.load(written).dataobj) > 0

    pre, inferer, post, network = _sections(bundle, weights)
    deploy_post = Compose([t for t in post.transforms if "SaveImage" not in type(t).__name__])  # as MONAI Deploy
    label_post = Compose([t for t in post.transforms if not isinstance(t, SaveImaged)])  # as MONAI Label
    assert len(deploy_post.transforms) == len(label_post.transforms) == len(post.transforms) - 2

    by_path = _infer(pre, inferer, label_post, network, {"image": str(path)})  # MONAI Label passes the path
    np.testing.assert_array_equal(by_path, expected)

    if "dicom" in source or "nifti" in source:  # MONAI Deploy passes a loaded volume (W, H, D) and its affine
        volume = LoadVolume(axcodes=None)(str(path))
        meta = {"affine": volume.affine, "original_channel_dim": "no_channel", "spatial_shape": volume.shape[1:]}
        loaded = MetaTensor.ensure_torch_and_prune_meta(volume[0].numpy(), meta)
        by_volume = _infer(pre, inferer, deploy_post, network, {"image": loaded})
        np.testing.assert_array_equal(by_volume, expected)
