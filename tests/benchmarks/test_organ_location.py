"""Issue 7's check that trained lung and liver masks lie where those organs are (``benchmarks/organ_location.py``).

The check runs the shipped weights (``bundles/<bundle>/models/model.pt``, trained on a GPU with the paper's
protocol) on the real DICOM series; its references and scores are tested on the real data too.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def organ():
    spec = importlib.util.spec_from_file_location("organ_location", REPO / "benchmarks" / "organ_location.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["lung_ct_segmentation", "liver_ct_segmentation"])
def test_trained_masks_lie_on_their_organ(organ, bundle, shared_data, tmp_path):
    ckpt = REPO / "bundles" / bundle / "models" / "model.pt"
    assert ckpt.is_file(), f"{ckpt}: the bundle's shipped weights are missing"
    rows = organ.check(bundle, ckpt, shared_data, tmp_path)
    assert [r["series"] for r in rows] == [series for series, _, _ in organ.SERIES[bundle]]
    for r in rows:
        for metric, threshold in organ.CRITERIA[r["reference"]].items():
            assert r[metric] >= threshold, (bundle, r["series"], metric, r[metric], threshold)
        assert r["passed"] and r["pred_ml"] > 0, r


def test_scores_and_references_on_real_labels(organ, shared_data):
    from pyconv_monai.transforms import LoadVolume

    load = LoadVolume(axcodes="RAS")
    ct = load(str(shared_data / "ct_dicom_dcmqi_3slice" / "dicom"))
    label = load(str(shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nii.gz"))[0].numpy()
    liver, spine = label == 1, label == 2
    voxel_ml = abs(float(np.linalg.det(np.asarray(ct.affine)[:3, :3]))) / 1000.0
    same = organ.scores(liver, liver, voxel_ml)
    assert same["dice"] == same["precision"] == same["recall"] == 1.0
    assert same["pred_ml"] == pytest.approx(liver.sum() * voxel_ml)
    apart = organ.scores(spine, liver, voxel_ml)
    assert apart["dice"] == 0.0 and apart["precision"] == 0.0  # the spine is not where the liver is
    air = organ.enclosed_air(ct[0].numpy(), np.asarray(ct.affine))
    assert air.sum() * voxel_ml > 10  # the lung bases: about 12 000 pixels on each side per slice
    assert (air & liver).sum() < 0.01 * air.sum() and not (air & spine).any()  # a few voxels at the liver dome
    hu = ct[0].numpy()
    assert (hu[air] < -400).all()
    half = hu.shape[0] // 2  # RAS: the first axis runs from the patient's right to left; a lung on each side
    assert air[:half].sum() > 0.3 * air.sum() and air[half:].sum() > 0.3 * air.sum()
