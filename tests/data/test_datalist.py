"""Datalists of the three training sets' layouts, the generic layouts, and their errors."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tifffile
from monai.data import CacheDataset
from PIL import Image
from pyconv_monai.data import LAYOUTS, detect_layout, load_datalist, split_datalist
from pyconv_monai.transforms import BinarizeLabeld, LoadSlice2Dd, pyconvunet_augmentation

EMBEDDED_ISBI = os.path.join(os.path.dirname(__file__), "..", "..", "data", "isbi2012_em")
SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def _check_items(items, n):
    assert len(items) == n
    cases = [d["case"] for d in items]
    assert len(set(cases)) == n and all(SAFE.match(c) for c in cases)
    for d in items:
        assert os.path.isabs(d["image"]) and os.path.isabs(d["label"])
        assert os.path.exists(d["image"]) and os.path.exists(d["label"])


@pytest.mark.parametrize("where", ["shared", "embedded"])
def test_isbi2012_em(where, request):
    root = request.getfixturevalue("shared_data") / "isbi2012_em" if where == "shared" else EMBEDDED_ISBI
    items = load_datalist(root, layout="isbi2012_em")
    _check_items(items, 25)
    assert [d["slice"] for d in items] == list(range(25))
    assert {d["volume"] for d in items} == {"train-volume"}
    assert detect_layout(root) == "isbi2012_em" and load_datalist(root) == items


def test_lung_ct_2d(shared_data):
    items = load_datalist(shared_data / "lung_ct_2d")
    _check_items(items, 240)
    for d in items:
        assert os.path.basename(d["image"]) == os.path.basename(d["label"]) == d["case"] + ".tif"
        assert "2d_images" in d["image"] and "2d_masks" in d["label"] and "slice" not in d


def test_liver_ct_2d_with_gaps_in_numbering(shared_data):
    items = load_datalist(shared_data / "liver_ct_2d")
    _check_items(items, 378)
    assert sum(d["subset"] == "train" for d in items) == 360 and sum(d["subset"] == "val" for d in items) == 18
    for d in items:
        assert d["label"] == d["image"][: -len(".png")] + "_mask.png"
        assert d["case"] == f"{d['subset']}_{os.path.basename(d['image'])[:-4]}"
    numbers = sorted(int(os.path.basename(d["image"])[:3]) for d in items if d["subset"] == "train")
    assert numbers[-1] + 1 > len(numbers)  # numbering has gaps: listed, not counted


@pytest.mark.parametrize("layout", ["isbi2012_em", "lung_ct_2d", "liver_ct_2d"])
def test_items_load_as_aligned_2d_slices(shared_data, layout):
    items = load_datalist(shared_data / layout)
    loader = LoadSlice2Dd()
    for d in (items[0], items[len(items) // 2], items[-1]):
        out = loader(d)
        assert out["image"].shape == out["label"].shape == (1, 512, 512)
        assert set(np.unique(out["label"].numpy())) <= {0.0, 255.0}


def _link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst, target_is_directory=os.path.isdir(src))


def test_folders_layout_with_volumes_and_a_dicom_series(tmp_path, shared_data):
    _link(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz", tmp_path / "images" / "abdomen.nii.gz")
    _link(shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz", tmp_path / "labels" / "abdomen.nii.gz")
    _link(shared_data / "ct_dicom_dcmqi_3slice" / "dicom", tmp_path / "images" / "liver 3slice")
    _link(
        shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nrrd",
        tmp_path / "labels" / "liver 3slice_seg.nrrd",
    )
    items = load_datalist(tmp_path)
    _check_items(items, 30 + 3)
    assert detect_layout(tmp_path) == "folders"
    assert [d["slice"] for d in items[:3]] == [0, 1, 2] and items[0]["case"] == "abdomen_s000"
    assert items[30]["case"] == "liver_3slice_s000" and items[30]["volume"] == "liver_3slice"  # filesystem-safe
    out = LoadSlice2Dd()(items[31])
    assert out["image"].shape == out["label"].shape == (1, 512, 512)
    assert 0 < float(out["image"][out["label"] == 1].mean()) < 100  # liver


def test_decathlon_layout(tmp_path, shared_data):
    _link(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz", tmp_path / "imagesTr" / "ct_001.nii.gz")
    _link(shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz", tmp_path / "labelsTr" / "ct_001.nii.gz")
    dataset = {"name": "test", "training": [{"image": "./imagesTr/ct_001.nii.gz", "label": "./labelsTr/ct_001.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    items = load_datalist(tmp_path)
    _check_items(items, 30)
    assert items[0]["volume"] == "ct_001" and items[29]["slice"] == 29
    # slices are counted along the axis that becomes the last one in the chosen orientation
    assert len(load_datalist(tmp_path, axcodes="PSL")) == 122


def test_unknown_layout_lists_the_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError) as err:
        load_datalist(tmp_path)
    assert str(tmp_path) in str(err.value)
    for name in LAYOUTS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="unknown layout 'mnist'"):
        load_datalist(tmp_path, layout="mnist")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_datalist(tmp_path / "nowhere")


def _write_tif(path, shape=(8, 8), value=0, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full(shape, value, dtype), photometric="minisblack")  # 3D: a stack of pages


def test_empty_and_unmatched_folders_name_the_folder_or_file(tmp_path):
    (tmp_path / "2d_images").mkdir()
    (tmp_path / "2d_masks").mkdir()
    with pytest.raises(ValueError, match=r"2d_images: no image files; layout 'lung_ct_2d' expects"):
        load_datalist(tmp_path)
    _write_tif(tmp_path / "2d_images" / "a.tif")
    _write_tif(tmp_path / "2d_images" / "b.tif")
    _write_tif(tmp_path / "2d_masks" / "a.tif", value=255)
    with pytest.raises(ValueError, match=r"2d_images/b\.tif: image without label"):
        load_datalist(tmp_path)
    _write_tif(tmp_path / "2d_masks" / "b.tif")
    _write_tif(tmp_path / "2d_masks" / "c.tif")
    with pytest.raises(ValueError, match=r"2d_masks/c\.tif: label without image"):
        load_datalist(tmp_path)


def test_liver_layout_errors(tmp_path):
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "001_mask.png")
    with pytest.raises(ValueError, match=r"001_mask\.png: mask without image"):
        load_datalist(tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "001.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "002.png")
    with pytest.raises(ValueError, match=r"002\.png: image without mask"):
        load_datalist(tmp_path, layout="liver_ct_2d")


def test_isbi_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="train-volume.tif not found; layout 'isbi2012_em' expects"):
        load_datalist(tmp_path, layout="isbi2012_em")
    _write_tif(tmp_path / "train-volume.tif", shape=(4, 8, 8))
    _write_tif(tmp_path / "train-labels.tif", shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"train-labels\.tif holds 3 slice\(s\) but its image .* holds 4"):
        load_datalist(tmp_path)


def test_folders_layout_errors(tmp_path, shared_data):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError, match=r"images: no image files; layout 'folders'"):
        load_datalist(tmp_path)
    shutil.copy(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz", tmp_path / "images" / "a.nii.gz")
    with pytest.raises(ValueError, match=r"labels: no label files"):
        load_datalist(tmp_path)
    shutil.copy(
        shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nii.gz", tmp_path / "labels" / "a.nii.gz"
    )
    with pytest.raises(ValueError, match=r"labels/a\.nii\.gz holds 3 slice\(s\) but its image .*a\.nii\.gz holds 30"):
        load_datalist(tmp_path)


def test_decathlon_errors(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "./imagesTr/x.nii.gz", "label": "y"}]}))
    with pytest.raises(ValueError, match=r"imagesTr/x\.nii\.gz: listed in .*dataset\.json but not found"):
        load_datalist(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a usable Decathlon dataset.json"):
        load_datalist(tmp_path)


def test_nothing_is_written_next_to_the_data(tmp_path, shared_data):
    """Listing, loading, splitting and caching leave the user's folders as they were (here made read-only)."""
    root = tmp_path / "lung"
    shutil.copytree(shared_data / "lung_ct_2d", root, ignore=lambda d, names: sorted(names)[8:])
    for d in (root, root / "2d_images", root / "2d_masks"):
        os.chmod(d, 0o555)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    try:
        train, val = split_datalist(load_datalist(root))
        ds = CacheDataset(train, [LoadSlice2Dd(), BinarizeLabeld("label"), pyconvunet_augmentation()], progress=False)
        assert ds[0]["image"].shape == (1, 512, 512)
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    finally:
        for d in (root, root / "2d_images", root / "2d_masks"):
            os.chmod(d, 0o755)
