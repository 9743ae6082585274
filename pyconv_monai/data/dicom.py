# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""DICOM series discovery and reading: CT series folders as 3D volumes in HU with a correct affine, and DICOM SEG.

MONAI's ``PydicomReader`` stacks every file of a folder in ``InstanceNumber`` order and averages the slice distance:
several series in one folder, missing slices or mixed geometry silently give a wrong volume. ``DicomSeriesReader``
groups files by series, sorts them along the slice normal (``ImagePositionPatient``), and refuses what is not a
regular volume, naming the files. ``DicomSegReader`` reads DICOM Segmentation objects with highdicom.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

__all__ = [
    "DicomSeries",
    "DicomSeriesReader",
    "DicomSegReader",
    "file_problem",
    "find_dicom_series",
    "is_dicom_file",
    "is_dicom_seg",
    "series_geometry",
    "sorted_series_headers",
]

PathLike = str | os.PathLike

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
MEDIA_STORAGE_DIRECTORY_UID = "1.2.840.10008.1.3.10"  # DICOMDIR
# modalities of DICOM objects that are not images to be stacked into a volume
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "PLAN", "FID", "RWV", "AU"}
)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# what a path that is not a regular file is, for messages
_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def _reason(e: OSError) -> str:
    return f"cannot be read ({type(e).__name__}: {e.strerror or e})"


def file_problem(path: PathLike, open_it: bool = True) -> str | None:
    """Why ``path`` cannot be read as a file, or ``None``: missing, a dangling symbolic link, not a regular file
    (a FIFO, device or socket: never opened, since opening a FIFO blocks), or (``open_it``) an error opening it
    (e.g. ``PermissionError``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a dangling symbolic link (its target {os.readlink(path)} does not exist)"
        return "it does not exist"
    except OSError as e:
        return _reason(e)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_TYPES if test(st.st_mode)), "a special file")
        return f"not a regular file ({kind}); not opened"
    if open_it:
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            return _reason(e)
    return None


def is_dicom_file(path: PathLike) -> bool:
    """Whether ``path`` is a file with the DICOM preamble (``DICM`` at byte 128); the file extension does not matter.
    FIFOs and devices are not opened (``False``)."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _sop_class_uid(ds: pydicom.Dataset) -> str:
    """The SOP class, from the dataset or, where that is empty (de-identified files), from the file meta."""
    uid = str(ds.get("SOPClassUID", "") or "")
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return uid


def is_dicom_seg(path: PathLike) -> bool:
    """Whether ``path`` is a DICOM Segmentation (SEG) object."""
    if not os.path.isfile(path) or not is_dicom_file(path):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # unreadable: not recognisably a SEG; the reader that opens it reports the problem
        return False
    return _sop_class_uid(ds) == SEG_SOP_CLASS_UID or ds.get("Modality", "") == "SEG"


@dataclass
class DicomSeries:
    """One image series found under a folder tree.

    Attributes:
        key: identifies the series for ``series_uid=`` arguments: its SeriesInstanceUID, or, where that is empty,
            ``"noUID:<folder>:<SeriesNumber>:<n>"``.
        series_uid: SeriesInstanceUID (``""`` when the files carry none).
        folder: the folder holding the files (the first file's folder if they are spread over several).
        files: the files, sorted along the slice normal where positions are known (else by InstanceNumber).
        modality, description, series_number, study_uid, frame_of_reference_uid, rows, columns: from the headers.
        multiframe: whether the series is one enhanced multi-frame file (not supported by ``DicomSeriesReader``).
        unreadable: files in the series' folders that cannot be read (permission denied, dangling symbolic links),
            with the reason: each may be a slice of the series, so ``DicomSeriesReader`` refuses the series.
    """

    key: str
    series_uid: str
    folder: str
    files: list[str] = field(default_factory=list)
    modality: str = ""
    description: str = ""
    series_number: int | None = None
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    rows: int = 0
    columns: int = 0
    multiframe: bool = False
    unreadable: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        number = "" if self.series_number is None else f" #{self.series_number}"
        return (
            f"{self.key!r}: {self.modality or '?'} '{self.description}'{number}, {len(self.files)} file(s), "
            f"{self.rows}x{self.columns}, in {self.folder}"
        )


def _read_header(path: str) -> pydicom.Dataset | None:
    """The header of a DICOM file, ``None`` for files that are not DICOM; warns about damaged DICOM files.

    Raises:
        OSError: the file cannot be opened (e.g. ``PermissionError``).
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except OSError:
        raise
    except InvalidDicomError:
        if is_dicom_file(path):
            warnings.warn(f"skipping unreadable DICOM file {path}: its header is damaged.", stacklevel=3)
        return None
    except Exception as e:  # truncated or corrupt header
        if is_dicom_file(path):
            warnings.warn(f"skipping unreadable DICOM file {path}: {type(e).__name__}: {e}", stacklevel=3)
        return None


def _classify(ds: pydicom.Dataset) -> str:
    """``"image"`` to stack, ``"other"`` for non-image objects (SEG, RT, SR, presentation states, DICOMDIR), or
    ``"incomplete"`` for a header without the image description (Rows/Columns): a truncated file."""
    sop = _sop_class_uid(ds)
    if sop in (SEG_SOP_CLASS_UID, MEDIA_STORAGE_DIRECTORY_UID) or str(ds.get("Modality", "")) in NON_IMAGE_MODALITIES:
        return "other"
    return "image" if "Rows" in ds and "Columns" in ds else "incomplete"


def _rounded(values: Any, decimals: int = 4) -> tuple[float, ...]:
    try:
        return tuple(round(float(v), decimals) for v in values)
    except (TypeError, ValueError):
        return ()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _sort_key(path: str, ds: pydicom.Dataset) -> tuple:
    iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
    position = math.nan
    if iop is not None and ipp is not None and len(iop) == 6 and len(ipp) == 3:
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        position = float(np.dot(normal, np.asarray(ipp, float)))
    instance = _int_or_none(ds.get("InstanceNumber"))
    return (math.isnan(position), position if not math.isnan(position) else 0.0, instance or 0, path)


def _candidate_files(root: str, recursive: bool) -> tuple[list[str], dict[str, str]]:
    """The files to look at: ``root`` itself if it is a file, else the files in it (and its sub-folders), sorted,
    without hidden files; and the files that cannot be read, with the reason. Non-regular files (FIFOs, devices)
    are skipped with a warning, never opened."""
    if not os.path.isdir(root):
        paths = [root]
    elif recursive:
        paths = [os.path.join(d, f) for d, dirs, files in os.walk(root) for f in files]
    else:
        paths = [os.path.join(root, f) for f in os.listdir(root)]
    files: list[str] = []
    unreadable: dict[str, str] = {}
    for path in sorted(paths):
        if os.path.basename(path).startswith(".") or (path != root and os.path.isdir(path)):
            continue
        problem = file_problem(path)
        if problem is None:
            files.append(path)
        elif problem.startswith("not a regular file"):
            warnings.warn(f"skipping {path}: {problem}.", stacklevel=3)
        else:
            unreadable[path] = problem
    return files, unreadable


def _group_key(path: str, ds: pydicom.Dataset) -> tuple:
    """Which series a file belongs to: ``("uid", SeriesInstanceUID)``, or, where that is empty, ``("nouid", ...)``
    with its folder, study, series number and description, modality, frame of reference, orientation and size."""
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if uid:
        return ("uid", uid)
    return (
        "nouid",
        os.path.dirname(path),
        str(ds.get("StudyInstanceUID", "") or ""),
        _int_or_none(ds.get("SeriesNumber")),
        str(ds.get("SeriesDescription", "") or ""),
        str(ds.get("Modality", "") or ""),
        str(ds.get("FrameOfReferenceUID", "") or ""),
        _rounded(ds.get("ImageOrientationPatient", ())),
        int(ds.Rows),
        int(ds.Columns),
    )


def _series_of_group(
    key: tuple, members: list[tuple[str, pydicom.Dataset]], no_uid_count: dict[tuple, int]
) -> DicomSeries:
    """The :class:`DicomSeries` of one group of files (sorted here along the slice normal); ``no_uid_count`` numbers
    the series without SeriesInstanceUID per folder and series number."""
    members.sort(key=lambda m: _sort_key(*m))
    files = [m[0] for m in members]
    first = members[0][1]
    folder = os.path.dirname(files[0])
    number = _int_or_none(first.get("SeriesNumber"))
    if key[0] == "uid":
        series_key = key[1]
    else:
        base = (folder, number)
        no_uid_count[base] = no_uid_count.get(base, 0) + 1
        series_key = f"noUID:{folder}:{'' if number is None else number}:{no_uid_count[base]}"
    return DicomSeries(
        key=series_key,
        series_uid=key[1] if key[0] == "uid" else "",
        folder=folder,
        files=files,
        modality=str(first.get("Modality", "") or ""),
        description=str(first.get("SeriesDescription", "") or ""),
        series_number=number,
        study_uid=str(first.get("StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or ""),
        rows=int(first.Rows),
        columns=int(first.Columns),
        multiframe=any((_int_or_none(m[1].get("NumberOfFrames")) or 1) > 1 for m in members),
    )


def find_dicom_series(root: PathLike, recursive: bool = True) -> list[DicomSeries]:
    """Find every DICOM image series under ``root``, skipping non-DICOM files and non-image DICOM objects.

    Files are grouped by SeriesInstanceUID. Files whose SeriesInstanceUID is empty (some de-identified exports) are
    grouped by folder, study, series number and description, modality, frame of reference, orientation and size.
    DICOM SEG, RT structure sets, structured reports, presentation states and DICOMDIR files are skipped. Files with
    a DICOM preamble but a damaged header are skipped with a warning; non-regular files (FIFOs, devices) are skipped
    with a warning without being opened; files that cannot be opened (permission denied, dangling symbolic links)
    are listed in the ``unreadable`` of every series of their folder, which :class:`DicomSeriesReader` then refuses.

    Args:
        root: a folder (searched for files with any or no extension), or a single file.
        recursive: also search sub-folders.

    Returns:
        the series, sorted by folder, then series number, then key; each with its files sorted along the slice normal.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is a file that cannot be read.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.exists(root):
        raise FileNotFoundError(f"DICOM folder not found: {root}")
    problem = None if os.path.isdir(root) else file_problem(root)
    if problem is not None:
        raise ValueError(f"{root}: {problem}.")
    candidates, unreadable = _candidate_files(root, recursive)
    groups: dict[tuple, list[tuple[str, pydicom.Dataset]]] = {}
    for path in candidates:
        try:
            ds = _read_header(path)
        except OSError as e:  # became unreadable since it was listed
            unreadable[path] = _reason(e)
            continue
        kind = "other" if ds is None else _classify(ds)
        if kind == "incomplete":
            warnings.warn(f"skipping DICOM file {path}: its header has no Rows/Columns (truncated?).", stacklevel=2)
        if kind != "image":
            continue
        groups.setdefault(_group_key(path, ds), []).append((path, ds))
    no_uid_count: dict[tuple, int] = {}
    series = [_series_of_group(key, members, no_uid_count) for key, members in groups.items()]
    for s in series:  # an unreadable file may be a slice of any series of its folder
        folders = {os.path.dirname(f) for f in s.files}
        s.unreadable = {p: r for p, r in unreadable.items() if os.path.dirname(p) in folders}
    series.sort(key=lambda s: (s.folder, s.series_number if s.series_number is not None else -1, s.key))
    return series


def _unreadable_listing(unreadable: dict[str, str], limit: int = 3) -> str:
    shown = "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:limit])
    return shown + (f"; and {len(unreadable) - limit} more" if len(unreadable) > limit else "")


def _select_series(found: list[DicomSeries], root: str, series_uid: str | None, recursive: bool = True) -> DicomSeries:
    if not found:
        unreadable = _candidate_files(root, recursive)[1] if os.path.isdir(root) else {}
        if unreadable:
            raise ValueError(
                f"no DICOM image series can be read in {root}: {len(unreadable)} file(s) cannot be opened "
                f"({_unreadable_listing(unreadable)})."
            )
        raise ValueError(f"no DICOM image series found in {root} (no readable DICOM image files).")
    if series_uid:
        matches = [s for s in found if series_uid in (s.series_uid, s.key)]
        if not matches:
            listing = "\n  ".join(str(s) for s in found)
            raise ValueError(f"no series with SeriesInstanceUID {series_uid!r} in {root}; found:\n  {listing}")
        return matches[0]
    if len(found) > 1:
        listing = "\n  ".join(str(s) for s in found)
        raise ValueError(
            f"{root} holds {len(found)} DICOM series; choose one with series_uid=<key> (a SeriesInstanceUID or "
            f"the key shown):\n  {listing}"
        )
    return found[0]


def _distinct(values: Sequence[Any], files: Sequence[str], fmt: Any = str) -> str:
    """``"A (3 files, e.g. x), B (1 file, e.g. y)"`` for the distinct values in ``values``."""
    seen: dict[Any, list[str]] = {}
    for v, f in zip(values, files):
        seen.setdefault(v, []).append(f)
    return ", ".join(f"{fmt(v)} ({len(fs)} file{'s' * (len(fs) > 1)}, e.g. {fs[0]})" for v, fs in seen.items())


def _check_slice_headers(headers: Sequence[pydicom.Dataset], files: Sequence[str], where: str) -> None:
    """Raise where the slices differ in size, orientation or pixel spacing, or where several slices lack their
    position, or differ in Modality; warn where a single slice has no position. (A series without PixelSpacing gets
    1 mm here; :class:`DicomSeriesReader` refuses it unless a spacing is assumed.)"""
    modalities = [str(h.get("Modality", "") or "?") for h in headers]
    if len(set(modalities)) > 1:
        raise ValueError(
            f"{where}: slices of one series differ in Modality: {_distinct(modalities, files)}; it would be segmented "
            "as one image. Separate the files of each modality."
        )
    sizes = [(int(h.Rows), int(h.Columns)) for h in headers]
    if len(set(sizes)) > 1:
        raise ValueError(
            f"{where}: slices differ in size (rows x columns): {_distinct(sizes, files, lambda v: f'{v[0]}x{v[1]}')}."
        )
    geometry_tags = ("ImagePositionPatient", "ImageOrientationPatient")
    missing = [f for h, f in zip(headers, files) if any(t not in h for t in geometry_tags)]
    if missing:
        if len(headers) > 1:
            raise ValueError(
                f"{where}: cannot order the slices: ImagePositionPatient/ImageOrientationPatient missing in "
                f"{len(missing)} file(s), e.g. {missing[0]}."
            )
        warnings.warn(
            f"{files[0]}: no ImagePositionPatient/ImageOrientationPatient; the affine is a pixel-spacing scaling.",
            stacklevel=4,
        )
    iops = [_rounded(h.get("ImageOrientationPatient", (1, 0, 0, 0, 1, 0)), 4) for h in headers]
    if len(set(iops)) > 1:
        raise ValueError(
            f"{where}: slices have different orientations (ImageOrientationPatient): {_distinct(iops, files)}; "
            "a localizer or another stack is mixed into the series."
        )
    spacings = [_rounded(h.get("PixelSpacing", (1.0, 1.0)), 4) for h in headers]
    if len(set(spacings)) > 1:
        raise ValueError(f"{where}: slices have different PixelSpacing: {_distinct(spacings, files)}.")


def _check_one_acquisition(headers: Sequence[pydicom.Dataset], files: Sequence[str], where: str) -> None:
    """Raise where an InstanceNumber repeats: two acquisitions (or a copy of slices) under one SeriesInstanceUID,
    which their positions alone may not tell (two stacks 0.5 mm apart interleave into one of half the step)."""
    seen: dict[int, str] = {}
    repeated: list[tuple[int, str, str]] = []
    for h, f in zip(headers, files):
        number = _int_or_none(h.get("InstanceNumber"))
        if number is None:
            continue
        if number in seen:
            repeated.append((number, seen[number], f))
        else:
            seen[number] = f
    if not repeated:
        return
    number, first, second = repeated[0]
    acquisitions = [str(h.get("AcquisitionNumber", "") or "?") for h in headers]
    by_acquisition = f"; AcquisitionNumber {_distinct(acquisitions, files)}" if len(set(acquisitions)) > 1 else ""
    raise ValueError(
        f"{where}: {len(repeated)} InstanceNumber(s) repeated within one SeriesInstanceUID, e.g. {number} in {first} "
        f"and {second}{by_acquisition}: the series holds more than one acquisition (or copies of slices), whose "
        "slices would interleave into one wrong volume. Separate the acquisitions (e.g. with dcm2niix) or remove "
        "the copies."
    )


def _check_regular_steps(along: np.ndarray, files: Sequence[str], where: str, rtol: float) -> None:
    """Raise where two slices share a position, or where the steps between the (sorted) positions ``along`` the
    slice normal are not all equal: slices missing (a step that is a multiple of the smallest) or irregular."""
    steps = np.diff(along)
    step = float(steps.min())
    tol = max(rtol * abs(step), 1e-4)
    dup = [i for i, s in enumerate(steps) if s <= tol]
    if dup:
        i = dup[0]
        raise ValueError(
            f"{where}: {len(dup)} pair(s) of slices share a position, e.g. {files[i]} and "
            f"{files[i + 1]} (both at {along[i]:.3f} mm along the slice normal): the folder holds more than "
            "one volume (repeated acquisition, time points or echoes); separate them."
        )
    problems = []
    for i, s in enumerate(steps):
        if abs(s - step) <= tol:
            continue
        ratio = s / step
        gap = f"between {files[i]} ({along[i]:.3f} mm) and {files[i + 1]} ({along[i + 1]:.3f} mm)"
        if abs(ratio - round(ratio)) * step <= tol:
            problems.append(f"{round(ratio) - 1} slice(s) missing {gap}")
        else:
            problems.append(f"irregular step of {s:.3f} mm {gap}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(
            f"{where}: the {len(along)} slices do not form a regular volume (step {step:.3f} mm): {shown}. "
            "Supply the missing files or remove the extra ones; no volume is built because its geometry would be wrong."
        )


def _slice_step(positions: np.ndarray, normal: np.ndarray, pixel: float, where: str) -> np.ndarray:
    """The vector from one slice to the next, from the first and last of the (sorted) ``positions``; raise where
    the positions are off that line by more than a tenth of a ``pixel`` (mm), warn where it is oblique to
    ``normal`` (gantry tilt)."""
    n = len(positions)
    stack = (positions[-1] - positions[0]) / (n - 1)
    expected = positions[0] + np.outer(np.arange(n), stack)
    off_line = np.linalg.norm(positions - expected, axis=1).max()
    if off_line > max(0.1 * pixel, 1e-3):
        raise ValueError(
            f"{where}: the slice positions (ImagePositionPatient) do not lie on a line (up to {off_line:.2f} mm "
            "off); the slices do not form one volume."
        )
    cos_tilt = float(np.dot(stack, normal) / np.linalg.norm(stack))
    if cos_tilt < 1 - 1e-4:
        warnings.warn(
            f"{where}: slices are stacked {math.degrees(math.acos(min(cos_tilt, 1.0))):.1f} degrees off their normal "
            "(gantry tilt); the affine is sheared so that world coordinates stay exact.",
            stacklevel=4,
        )
    return stack


def series_geometry(
    headers: Sequence[pydicom.Dataset], files: Sequence[str], name: str = "", rtol: float = 0.01
) -> tuple[list[int], np.ndarray]:
    """Order the slices of one series along their normal and check that they form a regular volume.

    Args:
        headers: one pydicom header per file (pixel data not needed).
        files: the file of each header, for messages.
        name: the series' name (folder) for messages.
        rtol: tolerance on slice steps, relative to the smallest step.

    Returns:
        the slice order (indices into ``headers``, ascending along the slice normal) and the 4x4 affine in LPS
        that maps array index ``(column, row, slice)`` to patient coordinates in mm.

    Raises:
        ValueError: slices differ in Modality, size, orientation or pixel spacing; positions are missing; two slices
            share a position; slice positions are missing in between (gaps) or irregular; the positions are not on
            a line; or an InstanceNumber repeats (two acquisitions under one SeriesInstanceUID).

    Warns:
        UserWarning: the slices are stacked obliquely to their normal (gantry tilt); the affine is then sheared so
            that world coordinates stay exact.
    """
    where = name or (os.path.dirname(files[0]) if files else "DICOM series")
    _check_slice_headers(headers, files, where)
    iop = np.asarray(headers[0].get("ImageOrientationPatient", (1, 0, 0, 0, 1, 0)), float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    d_row, d_col = (float(v) for v in headers[0].get("PixelSpacing", (1.0, 1.0)))
    positions = np.asarray([h.get("ImagePositionPatient", (0.0, 0.0, 0.0)) for h in headers], float)
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    positions, along = positions[order], along[order]

    affine = np.eye(4)
    affine[:3, 0] = row_dir * d_col  # array axis 0: column index, along a row
    affine[:3, 1] = col_dir * d_row  # array axis 1: row index, down a column
    affine[:3, 3] = positions[0]
    if len(headers) == 1:
        thickness = headers[0].get("SpacingBetweenSlices") or headers[0].get("SliceThickness") or 1.0
        affine[:3, 2] = normal * float(thickness)
        return order, affine
    ordered_files = [files[i] for i in order]
    _check_regular_steps(along, ordered_files, where, rtol)
    _check_one_acquisition([headers[i] for i in order], ordered_files, where)  # positions may interleave
    _warn_instance_gaps([headers[i] for i in order], ordered_files, where)  # the positions cannot tell
    affine[:3, 2] = _slice_step(positions, normal, min(d_row, d_col), where)
    return order, affine


def sorted_series_headers(
    files: Sequence[PathLike], name: str = "", rtol: float = 0.01
) -> tuple[list[str], list[pydicom.Dataset], np.ndarray]:
    """The files of one single-frame series and their headers (no pixel data), in slice order, with its affine.

    What :class:`DicomSeriesReader` stacks: the order and the checks of :func:`series_geometry`.

    Args:
        files: the series' files, in any order.
        name: the series' name (folder) for messages.
        rtol: tolerance on slice steps, relative to the smallest step.

    Returns:
        the files and their headers, ascending along the slice normal, and the 4x4 affine in LPS.

    Raises:
        ValueError: a header cannot be read (the file is named), or the slices do not form a regular volume.
    """
    paths = [os.fspath(f) for f in files]
    headers = []
    for path in paths:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as e:
            raise ValueError(f"{path}: cannot read the DICOM header ({type(e).__name__}: {e}).") from e
    order, affine = series_geometry(headers, paths, name=name, rtol=rtol)
    return [paths[i] for i in order], [headers[i] for i in order], affine


def _warn_instance_gaps(headers: Sequence[pydicom.Dataset], files: Sequence[str], where: str) -> None:
    """Warn where InstanceNumber, usually consecutive along the slices, jumps: a file may be missing."""
    numbers = [_int_or_none(h.get("InstanceNumber")) for h in headers]
    if len(numbers) < 2 or None in numbers:
        return
    jumps = [i for i, step in enumerate(np.diff(np.asarray(numbers))) if abs(step) > 1]
    if jumps:
        i = jumps[0]
        warnings.warn(
            f"{where}: InstanceNumber jumps from {numbers[i]} ({files[i]}) to {numbers[i + 1]} ({files[i + 1]}); "
            "a file of the series may be missing.",
            stacklevel=3,
        )


@dataclass
class _SeriesData:
    """What ``DicomSeriesReader.read`` returns: the chosen series and its headers in volume order."""

    name: str
    series: DicomSeries
    files: list[str]
    headers: list[pydicom.Dataset]
    affine_lps: np.ndarray
    note: str = ""  # what geometry was assumed, if any


def _decode(path: str, dtype: np.dtype) -> np.ndarray:
    """One slice in modality units (HU for CT): pixel data with RescaleSlope/Intercept or the modality LUT applied."""
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as e:
        raise ValueError(f"{path}: cannot read the pixel data ({type(e).__name__}: {e}); is the file complete?") from e
    if int(ds.get("SamplesPerPixel", 1)) != 1 or pixels.ndim != 2:
        raise ValueError(
            f"{path}: expected one grayscale frame, got pixel array {pixels.shape} "
            f"({ds.get('PhotometricInterpretation', '?')}, NumberOfFrames={ds.get('NumberOfFrames', 1)})."
        )
    return np.asarray(apply_modality_lut(pixels, ds), dtype=dtype)


class DicomSeriesReader(ImageReader):
    """Read one DICOM image series (a folder, or a list of its files) as a 3D volume in modality units (HU for CT).

    Use it with MONAI's ``LoadImage``/``LoadImaged`` (``reader=DicomSeriesReader()``). Unlike ``PydicomReader`` it:

    - finds the series in the folder tree (any or no file extension) with :func:`find_dicom_series`, skipping non-DICOM
      files and non-image objects (SEG, RTSTRUCT, SR, ...); selects ``series_uid`` if given, and otherwise fails
      listing the series when there are several;
    - orders slices by their position along the slice normal (not ``InstanceNumber``), from inferior to superior
      for axial scans;
    - refuses mixed sizes, orientations or pixel spacings, duplicate positions and missing or irregular slices,
      naming the files (see :func:`series_geometry`);
    - applies RescaleSlope/RescaleIntercept (or the modality LUT) per slice.

    Compressed transfer syntaxes are decoded by pydicom's plugins (JPEG 2000 by ``pylibjpeg-openjpeg``). The output
    follows MONAI's convention: array ``(columns, rows, slices)`` and a RAS affine (``affine_lps_to_ras=True``), as
    ``PydicomReader`` gives; meta also holds ``series_uid``, ``modality`` and ``series_description``.

    Args:
        series_uid: SeriesInstanceUID (or :class:`DicomSeries` key) of the series to read from a folder holding several.
        recursive: search sub-folders of a folder.
        affine_lps_to_ras: convert the affine to RAS, as MONAI's other readers.
        rtol: tolerance on slice steps, relative to the step.
        dtype: dtype of the returned array.
        assume_spacing: voxel size in mm along the array axes ``(column step, row step, slice step)`` for a series
            whose headers lack it (no PixelSpacing; a single slice without SliceThickness); ``None`` refuses such
            a series, since its volume in mL would be invented.
    """

    def __init__(
        self,
        series_uid: str | None = None,
        recursive: bool = True,
        affine_lps_to_ras: bool = True,
        rtol: float = 0.01,
        dtype: np.dtype | type = np.float32,
        assume_spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.assume_spacing = None if assume_spacing is None else tuple(float(v) for v in assume_spacing)
        self.series_uid = series_uid
        self.recursive = recursive
        self.affine_lps_to_ras = affine_lps_to_ras
        self.rtol = rtol
        self.dtype = np.dtype(dtype)

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """A folder, or DICOM files that are not SEG objects."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        if len(names) == 1 and os.path.isdir(names[0]):
            return True
        return bool(names) and all(is_dicom_file(f) and not is_dicom_seg(f) for f in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> _SeriesData:
        """Find the series and read the headers of its files.

        Args:
            data: a folder, a single DICOM file, or the files of one series.
            kwargs: ``series_uid`` overrides the reader's.

        Raises:
            FileNotFoundError: a path does not exist.
            ValueError: no series, several series and none chosen, a file in the series' folder that cannot be read
                (permission denied, a dangling symbolic link), the slices do not form a regular volume, or the
                headers lack the voxel size (no PixelSpacing) and no ``assume_spacing`` is given.
        """
        series_uid = kwargs.get("series_uid", self.series_uid)
        names = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(d) for d in data]
        if len(names) == 1:
            found = find_dicom_series(names[0], recursive=self.recursive)
            name = names[0]
        else:
            for f in names:
                if not os.path.isfile(f):
                    raise FileNotFoundError(f"DICOM file not found: {f}")
            by_key: dict[str, DicomSeries] = {}
            for f in names:
                for s in find_dicom_series(f):
                    if s.key in by_key:
                        by_key[s.key].files.extend(s.files)
                    else:
                        by_key[s.key] = s
            found = list(by_key.values())
            name = os.path.dirname(names[0])
        if not found and len(names) == 1 and os.path.isfile(names[0]):
            raise ValueError(f"{names[0]}: not a readable DICOM image file.")
        series = _select_series(found, name, series_uid, self.recursive)
        if series.unreadable:
            raise ValueError(
                f"{name}: series {series.key!r} is incomplete or cannot be checked: {len(series.unreadable)} file(s) "
                f"in its folder cannot be read ({_unreadable_listing(series.unreadable)}); each may be one of its "
                "slices, so no volume is built from the others. Make the files readable or move them out."
            )
        if series.multiframe:
            raise ValueError(
                f"{name}: series {series.key!r} is an enhanced multi-frame DICOM file ({series.files[0]}); "
                "only single-frame series are supported. Convert it, e.g. with dcm2niix, to NIfTI."
            )
        files, headers, affine = sorted_series_headers(series.files, name=name, rtol=self.rtol)
        missing = []
        if "PixelSpacing" not in headers[0]:
            missing += ["PixelSpacing (the pixel size)"]
        single_without_thickness = len(headers) == 1 and not (
            headers[0].get("SpacingBetweenSlices") or headers[0].get("SliceThickness")
        )
        if single_without_thickness:
            missing += ["SliceThickness/SpacingBetweenSlices (the slice thickness of its single slice)"]
        note = ""
        if missing:
            what = " and ".join(missing)
            if self.assume_spacing is None:
                raise ValueError(
                    f"{name}: no usable voxel geometry: its headers have no {what}, e.g. {files[0]}. Volumes (mL) and "
                    "masks would be wrong. Give the voxel size explicitly with assume_spacing (e.g. '1,1,3' mm)."
                )
            affine = affine.copy()  # built with 1 mm where the headers are silent
            for axis in [0, 1] * ("PixelSpacing" not in headers[0]) + [2] * single_without_thickness:
                affine[:3, axis] *= self.assume_spacing[axis]
            note = f"voxel size assumed {'x'.join(f'{v:g}' for v in self.assume_spacing)} mm (no {what})"
            warnings.warn(f"{name}: {note}.", stacklevel=2)
        return _SeriesData(name=name, series=series, files=files, headers=headers, affine_lps=affine, note=note)

    def get_data(self, img: _SeriesData) -> tuple[np.ndarray, dict]:
        """Decode every slice and stack them.

        Returns:
            the array ``(columns, rows, slices)`` in modality units and its meta dict (``affine``, ``original_affine``,
            ``spatial_shape``, ``space``, ``spacing``, ``series_uid``, ``modality``, ``series_description``).

        Raises:
            ValueError: a file's pixel data cannot be decoded (truncated, unsupported compression) or is not one
                grayscale frame of the series' size.
        """
        rows, cols = int(img.headers[0].Rows), int(img.headers[0].Columns)
        volume = np.empty((cols, rows, len(img.files)), dtype=self.dtype)
        for k, path in enumerate(img.files):
            pixels = _decode(path, self.dtype)
            if pixels.shape != (rows, cols):
                raise ValueError(f"{path}: pixel array {pixels.shape} does not match Rows x Columns {rows}x{cols}.")
            volume[..., k] = pixels.T
        affine = _LPS_TO_RAS @ img.affine_lps if self.affine_lps_to_ras else img.affine_lps.copy()
        first = img.headers[0]
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(volume.shape),
            MetaKeys.SPACE: SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            "spacing": np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
            "series_uid": img.series.series_uid,
            "modality": str(first.get("Modality", "") or ""),
            "series_description": str(first.get("SeriesDescription", "") or ""),
        }
        if img.note:
            meta["assumed_spacing"] = list(self.assume_spacing or ())
            meta["geometry_note"] = img.note
        return volume, meta


class DicomSegReader(ImageReader):
    """Read a DICOM Segmentation (SEG) object as a label volume with highdicom.

    Segments are combined into one label map whose values are the segment numbers (binary and fractional SEGs;
    overlapping segments are an error). The output follows MONAI's convention (array ``(columns, rows, slices)``,
    RAS affine); the slices keep highdicom's order, which may be the reverse of :class:`DicomSeriesReader`'s, but the
    affine says so: after orientation to common axcodes (``LoadVolumed``, ``LoadSlice2Dd``) or resampling to the
    image, label and image line up where the SEG covers the same slices. Meta ``labels`` maps segment labels to their
    numbers.

    Args:
        affine_lps_to_ras: convert the affine to RAS, as MONAI's other readers.
    """

    def __init__(self, affine_lps_to_ras: bool = True) -> None:
        super().__init__()
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and is_dicom_seg(names[0])

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Open the SEG.

        Raises:
            ValueError: the file is not a readable DICOM SEG.
        """
        import highdicom as hd  # not a cycle: a 0.3-0.8 s import that only SEG inputs need

        path = os.fspath(data if isinstance(data, (str, os.PathLike)) else data[0])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"DICOM SEG file not found: {path}")
        try:
            seg = hd.seg.segread(path)
        except Exception as e:
            raise ValueError(f"{path}: not a readable DICOM SEG ({type(e).__name__}: {e}).") from e
        seg.filename = path
        return seg

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The label map ``(columns, rows, slices)`` and its meta dict.

        Raises:
            ValueError: the SEG's frames do not form a regular volume, or its segments overlap.
        """
        path = getattr(img, "filename", "DICOM SEG")
        try:
            vol = img.get_volume(combine_segments=True, dtype=np.uint16)
        except Exception as e:
            raise ValueError(f"{path}: cannot build a label volume from the SEG ({type(e).__name__}: {e}).") from e
        # highdicom: array (slices, rows, columns), LPS affine on those indices; MONAI: (columns, rows, slices)
        array = np.ascontiguousarray(np.asarray(vol.array).transpose(2, 1, 0))
        affine = np.asarray(vol.affine, float)[:, [2, 1, 0, 3]]
        if self.affine_lps_to_ras:
            affine = _LPS_TO_RAS @ affine
        labels = {str(s.SegmentLabel): int(s.SegmentNumber) for s in img.SegmentSequence}
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
            MetaKeys.SPACE: SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            "spacing": np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
            "labels": labels,
        }
        return array, meta
