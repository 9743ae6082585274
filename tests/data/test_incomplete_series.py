"""A series is complete or it is refused: copies of the real CT series with a slice that cannot be read, two
acquisitions under one SeriesInstanceUID, mixed Modality, a FIFO in the folder, an all-unreadable folder. Each gives
a named error (or a message), never a smaller volume. Permission denied is simulated with a patched ``open`` (as
root, ``chmod`` does not stop reads); the other unreadable slice is a real dangling symbolic link."""

from __future__ import annotations

import builtins
import logging
import os
import shutil
import threading

import pydicom
import pytest
from pyconv_monai.data import DicomSeriesReader, find_cases, find_dicom_series
from pyconv_monai.transforms import LoadVolume, LoadVolumed

from tests.dicom_copies import copy_series


@pytest.fixture
def dcmqi(shared_data):
    return shared_data / "ct_dicom_dcmqi_3slice" / "dicom"


@pytest.fixture
def denied(monkeypatch):
    """``denied(path)``: opening ``path`` raises PermissionError from now on (as ``chmod 000`` does for a user)."""
    blocked: set[str] = set()
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    return lambda path: blocked.add(os.path.abspath(os.fspath(path)))


def test_a_slice_denied_fails_the_series(dcmqi, tmp_path, denied, caplog):
    folder = tmp_path / "in" / "ct"
    shutil.copytree(dcmqi, folder)
    denied(folder / "02.dcm")  # the middle slice: the other two would form a regular 2 mm volume
    message = r"02.dcm: cannot be read \(PermissionError: Permission denied\)"
    with pytest.raises(ValueError, match=r"series .* is incomplete or cannot be checked: 1 file\(s\) .*" + message):
        LoadVolume()(folder)
    with caplog.at_level(logging.INFO):
        (case,) = find_cases(tmp_path / "in")
    assert str(folder / "02.dcm") in case["files"] and len(case["files"]) == 3
    incomplete = r"the DICOM series is incomplete, one of its 3 files cannot be read.*"
    with pytest.raises(ValueError, match=incomplete + message):
        LoadVolumed(keys="image")({"image": case["files"], "series_uid": case["series_uid"]})


def test_a_dangling_symlink_slice_fails_the_series(dcmqi, tmp_path):
    folder = tmp_path / "ct"
    shutil.copytree(dcmqi, folder)
    os.remove(folder / "02.dcm")
    os.symlink(tmp_path / "gone.dcm", folder / "02.dcm")
    with pytest.raises(ValueError, match=r"02.dcm: a dangling symbolic link \(its target .*gone.dcm does not exist\)"):
        LoadVolume()(folder)
    (case,) = find_cases(folder)
    with pytest.raises(FileNotFoundError, match=r"DICOM series is incomplete.*02.dcm \(a dangling symbolic link"):
        LoadVolume()(case["files"])


def test_all_unreadable_folder_says_why(dcmqi, tmp_path, denied):
    folder = tmp_path / "ct"
    shutil.copytree(dcmqi, folder)
    for name in os.listdir(folder):
        denied(folder / name)
    with pytest.raises(ValueError, match=r"no image can be read under .*ct: 3 file\(s\) cannot be opened .*Permission"):
        find_cases(folder)
    with pytest.raises(ValueError, match=r"no DICOM image series can be read in .*3 file\(s\) cannot be opened"):
        DicomSeriesReader().read(str(folder))


def test_two_acquisitions_in_one_series_refused(dcmqi, tmp_path):
    """Two copies of the 1 mm series, 0.5 mm apart, under one SeriesInstanceUID: their positions interleave into a
    regular 0.5 mm stack of 6 slices; the repeated InstanceNumbers tell."""
    folder = tmp_path / "two"
    uid = "1.2.826.0.1.3680043.8.498.1818"
    copy_series(dcmqi, folder, prefix="a_", series_uid=uid, AcquisitionNumber=1)
    for path in copy_series(dcmqi, folder, prefix="b_", series_uid=uid, AcquisitionNumber=2):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.5]
        ds.save_as(path)
    (series,) = find_dicom_series(folder)
    assert len(series.files) == 6
    with pytest.raises(
        ValueError,
        match=r"3 InstanceNumber\(s\) repeated within one SeriesInstanceUID.*"
        r"AcquisitionNumber 1 \(3 files.*2 \(3 files.*more than one acquisition",
    ):
        LoadVolume()(folder)


def test_mixed_modality_refused(dcmqi, tmp_path):
    folder = tmp_path / "mixed"
    uid = "1.2.826.0.1.3680043.8.498.1819"
    copy_series(dcmqi, folder, series_uid=uid, files=["01.dcm", "03.dcm"])
    copy_series(dcmqi, folder, series_uid=uid, files=["02.dcm"], Modality="MR")
    with pytest.raises(ValueError, match=r"mixed: slices of one series differ in Modality: CT \(2 files.*MR \(1 file"):
        LoadVolume()(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_skipped_never_opened(dcmqi, tmp_path, caplog):
    folder = tmp_path / "in"
    shutil.copytree(dcmqi, folder)
    os.mkfifo(folder / "pipe")
    os.mkfifo(folder / "pipe.nii.gz")
    result: dict = {}

    def discover():
        with caplog.at_level(logging.WARNING):
            result["cases"] = find_cases(folder)
        result["volume"] = LoadVolume()(folder)

    worker = threading.Thread(target=discover, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "a FIFO in the input folder blocked discovery"
    (case,) = result["cases"]
    assert len(case["files"]) == 3 and result["volume"].shape[-1] == 3
    assert f"skipping {folder / 'pipe'}: not a regular file (a FIFO); not opened" in caplog.text
    assert f"skipping {folder / 'pipe.nii.gz'}: not a regular file (a FIFO)" in caplog.text
    with pytest.raises(ValueError, match=r"pipe: not a regular file \(a FIFO\); not opened"):
        find_cases(folder / "pipe")
    with pytest.raises(ValueError, match=r"pipe.nii.gz: not a regular file \(a FIFO\)"):
        LoadVolume()(folder / "pipe.nii.gz")
