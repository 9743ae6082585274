"""find_cases: every DICOM series, volume, stack and 2D image under a folder, with safe unique names."""

from __future__ import annotations

import logging
import re
import shutil

import pytest
from pyconv_monai.data import find_cases

from tests.conftest import EMBEDDED_DATA
from tests.dicom_copies import copy_series

SAFE = re.compile(r"^_?[A-Za-z0-9][A-Za-z0-9._-]*$")


@pytest.fixture
def tree(shared_data, tmp_path):
    """A folder of mixed real inputs, as a clinical export might look."""
    root = tmp_path / "in"
    dcmqi, totalseg = shared_data / "ct_dicom_dcmqi_3slice", shared_data / "ct_dicom_totalseg"
    series_dir = root / "p1" / "study1" / "ct"
    shutil.copytree(dcmqi / "dicom", series_dir)
    copy_series(dcmqi / "dicom", series_dir, prefix="b_", SeriesNumber=3, SeriesDescription="second")
    shutil.copy(dcmqi / "seg" / "liver_seg_DICOM-SEG.dcm", series_dir / "object.dcm")  # a non-image DICOM object
    shutil.copytree(totalseg / "dicom", root / "p2" / "ct")  # no file extensions, empty UIDs
    (root / "vol").mkdir()
    shutil.copy(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz", root / "vol" / "ct.nii.gz")
    shutil.copy(shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz", root / "vol" / "ct_seg.nii.gz")
    for subset in ("train", "val"):
        (root / subset).mkdir()
        shutil.copy(shared_data / "liver_ct_2d" / subset / "001.png", root / subset / "001.png")
    (root / "em").mkdir()
    shutil.copy(EMBEDDED_DATA / "isbi2012_em" / "train-volume.tif", root / "em" / "stack.tif")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_text("hidden")
    (root / "out").mkdir()
    shutil.copy(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz", root / "out" / "old.nii.gz")
    return root


def test_cases_of_a_mixed_tree(tree, caplog):
    with caplog.at_level(logging.INFO, logger="pyconv_monai.data.cases"):
        cases = find_cases(tree, skip_dirs=[tree / "out"])
    by_name = {c["case"]: c for c in cases}
    assert sorted(by_name) == sorted(
        ["99000_S2", "99000_S3_second", "CT_Body_3.0", "ct", "train_001", "val_001", "stack"]
    ), sorted(by_name)
    first, second = by_name["99000_S2"], by_name["99000_S3_second"]
    assert first["kind"] == second["kind"] == "dicom_series" and first["image"] == second["image"]
    assert len(first["files"]) == len(second["files"]) == 3 and first["series_uid"] != second["series_uid"]
    assert not set(first["files"]) & set(second["files"])
    nouid = by_name["CT_Body_3.0"]
    assert nouid["series_uid"] == "" and len(nouid["files"]) == 20 and nouid["modality"] == "CT"
    assert by_name["ct"]["kind"] == "nifti" and by_name["stack"]["kind"] == "tiff"
    assert by_name["val_001"]["kind"] == "image2d" and by_name["val_001"]["image"].endswith("val/001.png")
    log = caplog.text
    assert "object.dcm: a DICOM SEG object, not an image series" in log
    assert "ct_seg.nii.gz: its name matches '*_seg.*'" in log
    assert "holds 2 DICOM image series; each is segmented as a case of its own" in log
    assert not any("out" in c["image"].split("/") for c in cases)  # the output folder is not searched


def test_hostile_tags_give_safe_names(shared_data, tmp_path):
    src = shared_data / "ct_dicom_dcmqi_3slice" / "dicom"
    copy_series(src, tmp_path / "a", PatientID="../../x", SeriesDescription="../../../etc/passwd")
    copy_series(src, tmp_path / "b", PatientID="..", SeriesDescription="/", SeriesNumber=None)
    copy_series(src, tmp_path / "c", PatientID="CON", SeriesDescription="a\\b:c*?<>|\x01")
    copy_series(src, tmp_path / "d", PatientID="../../x", SeriesDescription="../../../etc/passwd")
    names = [c["case"] for c in find_cases(tmp_path)]
    assert len(names) == 4 and len({n.lower() for n in names}) == 4, names
    for name in names:
        assert SAFE.match(name) and ".." not in name and "/" not in name and "\\" not in name, name
    assert names[0] == "x_S2_etc_passwd" and names[3] == "x_S2_etc_passwd_2"
    assert names[1] == "b"  # nothing left of the tags: the folder's name


def test_single_files_and_errors(shared_data, tmp_path):
    nifti = shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz"
    assert [(c["case"], c["kind"]) for c in find_cases(nifti)] == [("example_ct_sm", "nifti")]
    one = sorted((shared_data / "ct_dicom_dcmqi_3slice" / "dicom").iterdir())[1]
    (case,) = find_cases(one)
    assert case["kind"] == "dicom_series" and case["files"] == [str(one)]
    label = shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz"
    assert find_cases(label)[0]["case"] == "example_seg"  # a file given by name is never excluded
    with pytest.raises(FileNotFoundError, match="input not found"):
        find_cases(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        find_cases(tmp_path / "a.txt")
    assert find_cases(tmp_path) == []


def test_symbolic_link_loops_are_searched_once(shared_data, tmp_path):
    shutil.copytree(shared_data / "ct_dicom_dcmqi_3slice" / "dicom", tmp_path / "a")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    (tmp_path / "b").symlink_to(tmp_path / "a")
    cases = find_cases(tmp_path)
    assert [c["case"] for c in cases] == ["99000_S2"] and len(cases[0]["files"]) == 3
