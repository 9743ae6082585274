"""Label binarisation and multi-class mapping, with errors that name the file."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscrete, Compose
from pyconv_monai.data import load_datalist
from pyconv_monai.transforms import BinarizeLabel, BinarizeLabeld, LoadSlice2Dd, LoadVolumed, MapLabels, MapLabelsd
from pyconv_monai.workflows import load_transforms


@pytest.mark.parametrize("layout", ["isbi2012_em", "lung_ct_2d", "liver_ct_2d"])
def test_binarize_real_masks(shared_data, layout):
    item = load_datalist(shared_data / layout)[0]
    d = BinarizeLabeld("label")(LoadSlice2Dd()(item))
    label = d["label"]
    assert set(torch.unique(label).tolist()) == {0.0, 1.0} and label.dtype == torch.float32
    assert label.meta["filename_or_obj"] == item["label"]
    raw = LoadSlice2Dd(keys="label")(item)["label"]
    assert torch.equal(label.as_tensor(), (raw.as_tensor() == 255).float())


def test_non_binary_mask_is_an_error_naming_the_file(shared_data):
    item = load_datalist(shared_data / "liver_ct_2d")[0]
    label = LoadSlice2Dd(keys="label")(item)["label"]
    smeared = label.clone()
    smeared[0, 100, 100:103] = torch.tensor([127.0, 128.0, 3.0])  # e.g. a mask saved with interpolation
    with pytest.raises(ValueError, match=r"001_mask\.png: not a binary mask, values \{0, 3, 127, 128, 255\}"):
        BinarizeLabel()(smeared)
    out = AsDiscrete(threshold=127)(smeared)  # told otherwise: threshold (MONAI's, label >= threshold)
    assert set(torch.unique(out).tolist()) == {0.0, 1.0} and float(out[0, 100, 101]) == 1.0
    assert out[0, 100, 100:103].tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("layout", ["isbi2012_em", "lung_ct_2d", "liver_ct_2d"])
def test_label_threshold_gives_the_training_label(shared_data, layout):
    """The bundles' recipe with a threshold (MONAI's AsDiscreted) gives the label that the loss and metrics get from
    the strict recipe (BinarizeLabeld): same values, float32, same metadata."""
    item = load_datalist(shared_data / layout)[0]
    strict = Compose(load_transforms())(item)["label"]
    thresholded = Compose(load_transforms(label_threshold=127))(item)["label"]
    assert thresholded.dtype == strict.dtype == torch.float32
    assert torch.equal(thresholded.as_tensor(), strict.as_tensor())
    assert thresholded.meta["filename_or_obj"] == strict.meta["filename_or_obj"] == item["label"]


def test_binarize_accepts_binary_variants():
    for values in ([0, 1], [0, 255], [0], [255]):
        img = torch.tensor(values, dtype=torch.float32)[None]
        assert torch.equal(BinarizeLabel()(img), (img > 0).float())
    assert BinarizeLabel()(np.array([[0, 255]], np.uint8)).dtype == np.uint8


def test_map_totalsegmentator_labels_to_liver(shared_data):
    folder = shared_data / "ct_nifti_totalseg"
    d = LoadVolumed()({"image": str(folder / "example_ct_sm.nii.gz"), "label": str(folder / "example_seg.nii.gz")})
    d = MapLabelsd("label", mapping={5: 1})(d)  # liver vs everything else
    liver = d["label"] == 1
    assert set(torch.unique(d["label"]).tolist()) == {0.0, 1.0}
    assert 20 < float(d["image"][liver].mean()) < 80  # README: 45 HU
    assert d["label"].meta["filename_or_obj"].endswith("example_seg.nii.gz")


def test_map_labels_multi_class_and_strict():
    img = MetaTensor(torch.tensor([[[0.0, 1.0, 2.0, 7.0]]]), meta={"filename_or_obj": "seg.nrrd"})
    out = MapLabels({"1": 2, 2: 1}, default=0)(img)  # JSON configs give string keys
    np.testing.assert_array_equal(out[0, 0].numpy(), [0, 2, 1, 0])
    with pytest.raises(ValueError, match=r"seg\.nrrd: label values \[0, 7\] are not in the mapping"):
        MapLabels({1: 2, 2: 1}, default=None)(img)
    with pytest.raises(ValueError, match=r"seg\.nrrd: label values \{0, 0.5\} are not integers"):
        MapLabels({1: 1})(MetaTensor(torch.tensor([[0.0, 0.5]]), meta={"filename_or_obj": "seg.nrrd"}))
    with pytest.raises(ValueError, match="mapping must not be empty"):
        MapLabels({})
