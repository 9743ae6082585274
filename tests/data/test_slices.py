"""Volumes to 2D slices (LoadSlice2Dd, the training loads) and a 2D network back over volumes (LoadVolumed and MONAI's
SliceInferer, the inference) on the real NIfTI and DICOM volumes: both routes see the same pixels in the same
orientation and geometry."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import SliceInferer
from pyconv_monai.data import load_datalist
from pyconv_monai.transforms import CTWindowd, LoadSlice2Dd, LoadVolumed


@pytest.fixture(scope="module")
def volumes(shared_data):
    return [
        {
            "image": str(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz"),
            "label": str(shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz"),
            "case": "nifti",
        },
        {
            "image": str(shared_data / "ct_dicom_dcmqi_3slice" / "dicom"),
            "label": str(shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nrrd"),
            "case": "dicom",
        },
    ]


def test_volume_slices_match_per_slice_loading(volumes):
    """Slice k of a volume loaded whole (inference) is the slice the training loads, with the same geometry."""
    per_slice = LoadSlice2Dd()
    window = CTWindowd("image", preset="abdomen")
    for which, k in ((0, 0), (0, 17), (1, 1)):
        vol = window(LoadVolumed()(volumes[which]))
        ref = window(per_slice({**volumes[which], "slice": k}))
        for key in ("image", "label"):
            assert ref[key].shape == vol[key].shape[:-1]
            torch.testing.assert_close(vol[key][..., k].as_tensor(), ref[key].as_tensor())
        assert ref["image"].meta["slice"] == k
        torch.testing.assert_close(ref["image"].affine, ref["label"].affine)
    dicom_slice = per_slice({**volumes[1], "slice": 1})
    liver = window(dicom_slice)["image"][dicom_slice["label"] == 1]
    assert 0.375 < float(liver.mean()) < 0.625  # liver 0-100 HU, W400/L50


def test_slice_affines_place_each_slice(volumes):
    vol = LoadVolumed()(volumes[0])
    for k in (0, 29):
        ref = LoadSlice2Dd()({**volumes[0], "slice": k})
        expected = vol["image"].affine.numpy() @ np.array([3.0, 5.0, k, 1.0])
        np.testing.assert_allclose(ref["image"].affine.numpy() @ np.array([3.0, 5.0, 0.0, 1.0]), expected)


def test_batches_collate(volumes):
    """Slices of a volume loaded per item (the training datasets) collate into batches with their indices."""
    items = [{**volumes[0], "slice": k} for k in range(30)]
    batch = next(iter(DataLoader(Dataset(items, LoadSlice2Dd()), batch_size=8)))
    assert batch["image"].shape == batch["label"].shape == (8, 1, 101, 122)
    assert batch["slice"].tolist() == list(range(8))


@pytest.mark.parametrize("which", [0, 1])
def test_slice_inferer_runs_the_2d_network_on_training_slices(volumes, which):
    """A 2D network applied by SliceInferer to the oriented volume sees exactly the slices LoadSlice2Dd trains on."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1))
    item = LoadVolumed()(volumes[which])
    image = item["image"]
    inferer = SliceInferer(roi_size=tuple(image.shape[1:3]), spatial_dim=2, sw_batch_size=4)
    with torch.no_grad():
        out = inferer(image[None], net)
    assert out.shape == (1, 2, *image.shape[1:])
    loader = LoadSlice2Dd()
    for k in {0, image.shape[-1] - 1}:
        slice_k = loader({**volumes[which], "slice": k})["image"]
        with torch.no_grad():
            expected = net(slice_k.as_tensor()[None])
        torch.testing.assert_close(out[..., k].as_tensor(), expected, rtol=1e-4, atol=1e-4)


def test_datalist_slices_of_a_dicom_series(tmp_path, shared_data):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "ct").symlink_to(shared_data / "ct_dicom_totalseg" / "dicom", target_is_directory=True)
    (tmp_path / "labels" / "ct.nii.gz").symlink_to(
        shared_data / "ct_dicom_totalseg" / "labels" / "example_seg_dicom.nii.gz"
    )
    items = load_datalist(tmp_path)
    assert len(items) == 20 and items[0]["image"].endswith("images/ct")
    out = LoadSlice2Dd()(items[10])
    image, label = out["image"], out["label"]
    assert image.shape == label.shape == (1, 512, 512)
    assert 40 < float(image[label == 5].mean()) < 150  # liver in soft tissue
    assert float(image.affine[2, 3]) == pytest.approx(-804.5 + 2 * 10)  # slice 10, inferior first
