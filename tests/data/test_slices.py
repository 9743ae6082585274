"""Volumes to 2D slices (GridPatchDataset + SliceIterd) and a 2D network back over volumes (MONAI's SliceInferer),
on the real NIfTI and DICOM volumes: the slices of both routes are the same pixels in the same orientation."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.inferers import SliceInferer

from pyconv_monai.data import load_datalist, volume_slice_dataset
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


def test_volume_slice_dataset_matches_per_slice_loading(volumes):
    ds = volume_slice_dataset(volumes, LoadVolumed(), CTWindowd("image", preset="abdomen"), cache_rate=1.0)
    slices = list(ds)
    assert len(slices) == 30 + 3
    assert [s["case"] for s in slices[:2]] == ["nifti_s000", "nifti_s001"] and slices[-1]["case"] == "dicom_s002"
    per_slice = LoadSlice2Dd()
    window = CTWindowd("image", preset="abdomen")
    for s in (slices[0], slices[17], slices[31]):
        volume = volumes[0] if s["case"].startswith("nifti") else volumes[1]
        ref = window(per_slice({**volume, "slice": s["slice"]}))
        assert s["image"].shape == s["label"].shape == ref["image"].shape
        torch.testing.assert_close(s["image"].as_tensor(), ref["image"].as_tensor())
        torch.testing.assert_close(s["label"].as_tensor(), ref["label"].as_tensor())
        torch.testing.assert_close(s["image"].affine, ref["image"].affine)  # the slice knows where it lies
    assert 0.375 < float(slices[31]["image"][slices[31]["label"] == 1].mean()) < 0.625  # liver 0-100 HU, W400/L50


def test_slice_affines_place_each_slice(volumes):
    vol = LoadVolumed()(volumes[0])
    slices = list(volume_slice_dataset([volumes[0]], LoadVolumed()))
    for k in (0, 29):
        expected = vol["image"].affine.numpy() @ np.array([3.0, 5.0, k, 1.0])
        np.testing.assert_allclose(slices[k]["image"].affine.numpy() @ np.array([3.0, 5.0, 0.0, 1.0]), expected)


def test_batches_collate(volumes):
    loader = DataLoader(volume_slice_dataset(volumes[:1], LoadVolumed()), batch_size=8)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 1, 101, 122) and batch["slice"].tolist() == list(range(8))


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
