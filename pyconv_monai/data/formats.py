# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Which reader opens a path, and how many 2D slices it holds, from its name and header only."""

from __future__ import annotations

import os
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import ImageReader, NibabelReader, NrrdReader, PILReader

from .dicom import DicomSegReader, DicomSeriesReader, file_problem, is_dicom_file, is_dicom_seg
from .tiff import TIFF_SUFFIXES, TiffReader, tiff_num_pages

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "SUPPORTED_FORMATS",
    "file_stem",
    "get_reader",
    "image_kind",
    "num_slices",
    "slice_axis",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SUPPORTED_FORMATS = (
    "DICOM series folder, DICOM file (.dcm or no extension), DICOM SEG, NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), "
    "TIFF (.tif, .tiff; single or multi-page), PNG/JPEG/BMP"
)
# kinds whose files carry patient geometry (an affine); the others are plain pixel grids
GEOMETRY_KINDS = frozenset({"dicom_series", "dicom", "dicom_seg", "nifti", "nrrd"})
_AXIS_OF_LETTER = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``.nii.gz`` counts as one suffix); a folder's name for folders."""
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES[::-1] + NRRD_SUFFIXES + TIFF_SUFFIXES + IMAGE_2D_SUFFIXES + (".dcm",):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def image_kind(path: str | os.PathLike) -> str:
    """Classify a path: ``"dicom_series"`` (folder), ``"dicom_seg"``, ``"dicom"``, ``"nifti"``, ``"nrrd"``, ``"tiff"``
    or ``"image2d"`` (PNG/JPEG/BMP).

    Raises:
        FileNotFoundError: the path does not exist (or is a dangling symbolic link).
        ValueError: the file type is not supported, the file cannot be read (e.g. permission denied), or it is not
            a regular file (a FIFO or device: never opened).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return "dicom_series"
    if not os.path.isfile(path):
        problem = file_problem(path, open_it=False)
        if problem is not None and problem.startswith("not a regular file"):
            raise ValueError(f"{path}: {problem}.")
        detail = f" ({problem})" if problem and problem.startswith("a dangling") else ""
        raise FileNotFoundError(f"image file not found: {path}{detail}")
    lower = path.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if lower.endswith(NRRD_SUFFIXES):
        return "nrrd"
    if lower.endswith(TIFF_SUFFIXES):
        return "tiff"
    if lower.endswith(IMAGE_2D_SUFFIXES):
        return "image2d"
    if is_dicom_file(path):
        return "dicom_seg" if is_dicom_seg(path) else "dicom"
    problem = file_problem(path)
    if problem is not None:  # e.g. permission denied: say so, not "unsupported"
        raise ValueError(f"{path}: {problem}.")
    if lower.endswith(".dcm"):
        raise ValueError(f"{path}: not a readable DICOM file (no DICOM preamble); is it complete?")
    raise ValueError(f"{path}: unsupported file type; supported: {SUPPORTED_FORMATS}.")


def get_reader(
    path: str | os.PathLike, series_uid: str | None = None, kind: str | None = None, **kwargs: Any
) -> ImageReader:
    """A MONAI ``ImageReader`` for ``path``, to pass as ``LoadImage(...)(path, reader=...)``.

    2D images are read rows first (``PILReader(reverse_indexing=False)``, :class:`TiffReader`), so arrays are
    ``(H, W)`` as displayed; volumes follow MONAI's readers (``(x, y, z)`` with a RAS affine).

    Args:
        path: the file or DICOM folder.
        series_uid: for DICOM folders holding several series.
        kind: ``image_kind(path)`` where the caller knows it already.
        kwargs: passed to the reader (e.g. ``page`` for :class:`TiffReader`).
    """
    kind = kind or image_kind(path)
    if kind in ("dicom_series", "dicom"):
        return DicomSeriesReader(series_uid=series_uid, **kwargs)
    if kind == "dicom_seg":
        return DicomSegReader(**kwargs)
    if kind == "nifti":
        return NibabelReader(**kwargs)
    if kind == "nrrd":
        return NrrdReader(**kwargs)
    if kind == "tiff":
        return TiffReader(**kwargs)
    return PILReader(reverse_indexing=False, **kwargs)


def slice_axis(affine: np.ndarray, axcodes: str) -> int:
    """Which array axis of a volume with ``affine`` becomes the last axis after orienting it to ``axcodes``.

    Args:
        affine: 4x4 voxel-to-world affine (RAS or LPS: only the axis mapping matters).
        axcodes: three orientation letters, e.g. ``"PLS"``.
    """
    ornt = nib.orientations.io_orientation(np.asarray(affine, float))
    world_axis = _AXIS_OF_LETTER[axcodes[-1].upper()]
    return int(np.nonzero(ornt[:, 0] == world_axis)[0][0])


def num_slices(path: str | os.PathLike, axcodes: str = "PLS", series_uid: str | None = None) -> int:
    """How many 2D slices a file holds, read from its header where possible (no pixel data).

    Args:
        path: file or DICOM series folder.
        axcodes: the orientation volumes are brought to before slicing along its last axis.
        series_uid: for DICOM folders holding several series.

    Returns:
        1 for 2D images, the page count for TIFF stacks, the slice count along ``axcodes[-1]`` for volumes.

    Raises:
        ValueError: unreadable header, or a 4D (multi-channel) volume.
    """
    kind = image_kind(path)
    path = os.fspath(path)
    if kind == "image2d":
        return 1
    if kind == "tiff":
        return tiff_num_pages(path)
    if kind == "nifti":
        try:
            img = nib.load(path)
            shape, affine = img.shape, img.affine
        except Exception as e:
            raise ValueError(f"{path}: cannot read the NIfTI header ({type(e).__name__}: {e}).") from e
        shape = tuple(shape[:3]) if len(shape) == 4 and shape[3] == 1 else tuple(shape)
        if len(shape) == 2:
            return 1
        if len(shape) != 3:
            raise ValueError(f"{path}: a {len(shape)}D image {shape}; expected a 2D image or a 3D volume.")
        return int(shape[slice_axis(affine, axcodes)])
    if kind in ("dicom_series", "dicom"):
        data = DicomSeriesReader(series_uid=series_uid).read(path)
        shape = (int(data.headers[0].Columns), int(data.headers[0].Rows), len(data.files))
        return shape[slice_axis(data.affine_lps, axcodes)]
    reader = get_reader(path)  # NRRD, DICOM SEG: read the volume
    array, meta = reader.get_data(reader.read(path))
    shape = tuple(int(s) for s in meta["spatial_shape"])
    if len(shape) == 2:
        return 1
    return int(shape[slice_axis(meta["affine"], axcodes)])
