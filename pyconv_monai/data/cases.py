# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Find every image to segment under a folder: DICOM series (nested folders, any file names), NIfTI and NRRD volumes,
TIFF stacks and 2D images, each with a safe, unique case name for its outputs."""

from __future__ import annotations

import fnmatch
import logging
import os
import warnings
from collections.abc import Sequence

import pydicom
from pyconv_monai.utils import TEMP_PREFIX, UniqueNames, safe_name

from .dicom import DicomSeries, file_problem, find_dicom_series, is_dicom_file
from .formats import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, NRRD_SUFFIXES, SUPPORTED_FORMATS, file_stem
from .tiff import TIFF_SUFFIXES

__all__ = ["DEFAULT_EXCLUDE", "find_cases"]

logger = logging.getLogger(__name__)

# file names that hold labels, not images (the staged data sets and our own outputs follow these conventions)
DEFAULT_EXCLUDE = ("*_seg.*", "*_seg_*", "*_mask.*", "*_label.*", "*_labels.*", "*_gt.*", "volumes.csv")
_FILE_KINDS = (
    (NIFTI_SUFFIXES, "nifti"),
    (NRRD_SUFFIXES, "nrrd"),
    (TIFF_SUFFIXES, "tiff"),
    (IMAGE_2D_SUFFIXES, "image2d"),
)


def _file_kind(name: str) -> str | None:
    lower = name.lower()
    for suffixes, kind in _FILE_KINDS:
        if lower.endswith(suffixes):
            return kind
    return None


def _excluded(name: str, patterns: Sequence[str]) -> str | None:
    lower = name.lower()
    return next((p for p in patterns if fnmatch.fnmatchcase(lower, p.lower())), None)


def _inside(path: str, folders: Sequence[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == f or real.startswith(f + os.sep) for f in folders)


def _dicom_name(series: DicomSeries) -> str:
    """``<PatientID>_S<SeriesNumber>_<SeriesDescription>`` from the first file's header (empty parts left out)."""
    try:
        patient = str(pydicom.dcmread(series.files[0], stop_before_pixels=True).get("PatientID", "") or "")
    except Exception:  # the header was readable during discovery; a name is not worth failing for
        patient = ""
    parts = [safe_name(patient, 32, default="") if patient else ""]
    parts.append(f"S{series.series_number}" if series.series_number is not None else "")
    parts.append(safe_name(series.description, 40, default="") if series.description else "")
    name = "_".join(p for p in parts if p)
    return name or safe_name(os.path.basename(series.folder), 64, default="series")


def _log_skipped_dicom(candidates: Sequence[str], used: set[str]) -> None:
    for path in candidates:
        if path in used:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
            what = f"a DICOM {ds.get('Modality', '') or 'non-image'} object, not an image series"
        except Exception as e:
            what = f"not a readable DICOM file ({type(e).__name__})"
        logger.info(f"skipping {path}: {what}")


def _dicom_series(candidates: Sequence[str]) -> list[DicomSeries]:
    """Series of the candidate files, found folder by folder; a SeriesInstanceUID split over folders is merged."""
    by_folder: dict[str, list[str]] = {}
    for path in candidates:
        by_folder.setdefault(os.path.dirname(path), []).append(path)
    merged: dict[str, DicomSeries] = {}
    found: list[DicomSeries] = []
    wanted = set(candidates)
    for folder in sorted(by_folder):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            series_list = find_dicom_series(folder, recursive=False)
        for w in caught:
            if "not a regular file" not in str(w.message):  # find_cases has said so already
                logger.warning(str(w.message))
        for s in series_list:
            s.files = [f for f in s.files if f in wanted]
            if not s.files:
                continue
            if s.series_uid and s.series_uid in merged:
                merged[s.series_uid].files.extend(s.files)
                continue
            if s.series_uid:
                merged[s.series_uid] = s
            found.append(s)
    counts: dict[str, int] = {}
    for s in found:
        counts[s.folder] = counts.get(s.folder, 0) + 1
    for folder, n in counts.items():
        if n > 1:
            logger.info(f"{folder} holds {n} DICOM image series; each is segmented as a case of its own")
    return found


def _walk(root: str, skip: Sequence[str], recursive: bool) -> list[str]:
    """The files under the folder ``root``: not hidden, not temporary outputs, not in a ``skip`` folder; every folder
    searched once (following symbolic links, without looping)."""
    files: list[str] = []
    seen = {os.path.realpath(root)}
    for folder, dirs, names in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if d.startswith(".") or real in seen or _inside(real, skip):
                continue  # hidden, already searched (symbolic link loops), or an output folder
            seen.add(real)
            kept.append(d)
        dirs[:] = kept
        if not recursive:
            dirs[:] = []
        files.extend(os.path.join(folder, n) for n in sorted(names) if not n.startswith((".", TEMP_PREFIX)))
    return files


def _classify_files(
    files: Sequence[str], exclude: Sequence[str], single: bool
) -> tuple[list[dict], list[str], dict[str, str]]:
    """The image-file cases (``image``, ``kind``, ``name``) among ``files``, the candidate DICOM files, and the files
    that cannot be read (with the reason); excluded names are logged, non-regular files (FIFOs, devices) skipped with
    a warning and never opened, other files skipped (or, for a ``single`` file given as the input, refused)."""
    cases: list[dict] = []
    dicom_candidates: list[str] = []
    unreadable: dict[str, str] = {}
    for path in sorted(files):
        name = os.path.basename(path)
        special = file_problem(path, open_it=False)
        if special is not None and special.startswith("not a regular file"):
            if single:
                raise ValueError(f"{path}: {special}.")
            logger.warning(f"skipping {path}: {special}")
            continue
        pattern = None if single else _excluded(name, exclude)
        if pattern is not None:
            logger.info(f"skipping {path}: its name matches {pattern!r} (a label or output file)")
            continue
        kind = _file_kind(name)
        if kind is not None:
            cases.append({"image": path, "kind": kind, "name": file_stem(path)})
        elif (problem := file_problem(path)) is not None:  # permission denied, a dangling symbolic link
            if single:
                raise ValueError(f"{path}: {problem}.")
            unreadable[path] = problem
        elif name.lower().endswith(".dcm") or is_dicom_file(path):
            dicom_candidates.append(path)
        elif single:
            raise ValueError(f"{path}: unsupported file type; supported: {SUPPORTED_FORMATS}.")
        else:
            logger.debug(f"skipping {path}: not an image file")
    return cases, dicom_candidates, unreadable


def _dicom_case(series: DicomSeries) -> dict:
    """The case of one DICOM series, with its ``name`` (not yet unique) and a ``_sort`` key."""
    return {
        "image": series.folder,
        "kind": "dicom_series",
        "files": list(series.files) + sorted(series.unreadable),  # unreadable files fail the case when it is read
        "series_uid": series.series_uid,
        "modality": series.modality,
        "description": series.description,
        "name": _dicom_name(series),
        "_sort": (series.folder, series.series_number if series.series_number is not None else -1, series.key),
    }


def _name_cases(cases: list[dict], root: str, single: bool) -> None:
    """Replace each case's ``name`` by a safe, unique ``case``; files that share a stem get their folders below
    ``root`` as a prefix."""
    stems: dict[str, int] = {}
    for c in cases:
        stems[c["name"].lower()] = stems.get(c["name"].lower(), 0) + 1
    unique = UniqueNames()
    for c in cases:
        name = c.pop("name")
        if c["kind"] != "dicom_series" and stems[name.lower()] > 1 and not single:
            # the same file name in several folders: prefix the folders below the input (train/001, val/001)
            folders = os.path.relpath(os.path.dirname(c["image"]), root).split(os.sep)
            name = "_".join([f for f in folders if f not in (".", "")] + [name])
        c["case"] = unique(safe_name(name, 96))


def find_cases(
    dataset_dir: str | os.PathLike,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    skip_dirs: Sequence[str | os.PathLike] = (),
    recursive: bool = True,
) -> list[dict]:
    """Find every image to segment under ``dataset_dir``, one case per DICOM series or image file.

    - DICOM: files with the DICOM preamble (any or no extension) are grouped into series with
      :func:`pyconv_monai.data.find_dicom_series`, folder by folder (a SeriesInstanceUID spread over several folders
      is one case). Several series in one folder are separate cases. Non-image objects (SEG, RTSTRUCT, SR, ...) and
      damaged non-image files are skipped with a log line. A file that cannot be read (permission denied, a dangling
      symbolic link) in a series' folder is added to its ``files``, so that the case fails when read (it may be a
      slice of the series) instead of giving a smaller volume.
    - NIfTI (``.nii``, ``.nii.gz``), NRRD, TIFF (single or multi-page) and PNG/JPEG/BMP files: one case each.
    - Skipped: hidden files and folders, folders in ``skip_dirs`` (e.g. the output folder inside the input), file
      names matching ``exclude`` (label files such as ``*_seg.*`` and ``*_mask.*``, with a log line), non-regular
      files (FIFOs, devices: a warning, never opened), other files.

    Case names come from identifiers, made safe with :func:`pyconv_monai.utils.safe_name` (no path separators,
    no ``..``) and unique (case-insensitively; ``name_2``, ``name_3``, ... in discovery order): DICOM
    ``<PatientID>_S<SeriesNumber>_<SeriesDescription>`` (the folder's name when all are empty), files their stem
    (prefixed with their folders below ``dataset_dir`` where several files share it: ``train_001``, ``val_001``).
    Folders are searched once each, following symbolic links.

    Args:
        dataset_dir: a folder, or a single image file or DICOM file.
        exclude: ``fnmatch`` patterns of file names to leave out (case-insensitive); ``()`` keeps everything.
        skip_dirs: folders not to search.
        recursive: search sub-folders.

    Returns:
        dicts sorted by input path, each with ``"case"`` (the name), ``"image"`` (file, or folder of the series),
        ``"kind"`` (``"dicom_series"``, ``"nifti"``, ``"nrrd"``, ``"tiff"`` or ``"image2d"``); DICOM cases add
        ``"files"`` (the series' files), ``"series_uid"`` (empty when the files carry none), ``"modality"`` and
        ``"description"``.

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
        ValueError: a single file that is not a supported image or cannot be read; a folder where no file can be
            read (e.g. all permission denied), naming the files and the reason.
    """
    root = os.path.abspath(os.fspath(dataset_dir))
    if not os.path.exists(root):
        raise FileNotFoundError(f"input not found: {root}")
    skip = [os.path.realpath(os.fspath(d)) for d in skip_dirs]
    single = not os.path.isdir(root)
    files = [root] if single else _walk(root, skip, recursive)
    cases, dicom_candidates, unreadable = _classify_files(files, exclude, single)
    series = _dicom_series(dicom_candidates) if dicom_candidates else []
    _log_skipped_dicom(dicom_candidates, {f for s in series for f in s.files})
    if unreadable and not cases and not series:
        shown = "; ".join(f"{p}: {r}" for p, r in list(unreadable.items())[:3])
        raise ValueError(
            f"no image can be read under {root}: {len(unreadable)} file(s) cannot be opened ({shown}"
            f"{'; ...' if len(unreadable) > 3 else ''})."
        )
    in_series = {p for s in series for p in s.unreadable}
    for path, problem in unreadable.items():
        if path not in in_series:
            logger.warning(f"skipping {path}: {problem}")
    cases.extend(_dicom_case(s) for s in series)
    cases.sort(key=lambda c: c.pop("_sort", None) or (c["image"], -1, ""))
    _name_cases(cases, root, single)
    return cases
