"""Copies of the real DICOM series with changed tags, for tests of hostile values and bad studies."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def copy_series(
    src: Path, dst: Path, prefix: str = "", new_uids: bool = True, files=None, series_uid: str | None = None, **tags
) -> list[Path]:
    """Write the DICOM files of ``src`` (or ``files`` of it) into ``dst`` with ``tags`` set.

    Args:
        src: folder of a real series.
        dst: target folder (created).
        prefix: prepended to each file name (to put several copies in one folder).
        new_uids: give the copy its own SeriesInstanceUID and SOPInstanceUIDs (a different series).
        files: names of the files to copy (default: all).
        series_uid: the copy's SeriesInstanceUID (default: a new one derived from ``dst`` and ``prefix``).
        tags: DICOM keywords and values to set, e.g. ``PatientID="../../x"``.

    Returns:
        the written files.
    """
    dst.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid(entropy_srcs=[str(dst), prefix, "series"])
    out = []
    for name in sorted(files or os.listdir(src)):
        ds = pydicom.dcmread(src / name)
        if new_uids:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(dst), prefix, name])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for key, value in tags.items():
            setattr(ds, key, value)
        path = dst / f"{prefix}{name}"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out
