# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Checks of a volume's header before its pixels are read: a geometry that is stored (not invented by the reader)
and a size that the file can hold.

nibabel reads a NIfTI file whose qform and sform codes are 0, whose voxel sizes are 0 or whose sform is singular
with only a warning (or none) and an affine of 1 mm voxels: every volume in mL computed from it is wrong. These
files are refused here, naming the file and the reason, unless the caller gives the voxel size explicitly
(``assume_spacing``). A header claiming more voxels than its file can hold (or than :data:`MAX_VOXELS`) is refused
before any memory is allocated.

What cannot be detected: a file whose sform (or qform) was replaced together with its voxel sizes (e.g. a 3 mm CT
saved again by nibabel with an identity affine: sform code 2, pixdim 1 mm) is, for every reader, a valid 1 mm volume.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import nrrd
import numpy as np

__all__ = ["MAX_VOXELS", "AssumedGeometry", "check_nifti_header", "check_nrrd_header", "parse_spacing"]

# a sane limit on the voxels of one volume: 2**31 float32 voxels are 8 GiB
MAX_VOXELS = 2**31
# deflate cannot compress by more than about 1032:1, so a .gz file of n bytes holds at most this many times n
_MAX_DEFLATE_RATIO = 1032
_RTOL = 0.01  # voxel sizes of qform, sform and pixdim agree within 1 %


@dataclass
class AssumedGeometry:
    """The affine a volume is given when its header's geometry is refused and the caller assumed a voxel size.

    Attributes:
        affine: 4x4 voxel-to-RAS affine with the assumed voxel size.
        spacing: the assumed voxel size in mm.
        reason: why the header's own geometry was refused (for logs and the results table).
    """

    affine: np.ndarray
    spacing: tuple[float, ...]
    reason: str

    def message(self) -> str:
        """``"voxel size assumed 1x1x3 mm (<reason>)"``."""
        return f"voxel size assumed {'x'.join(f'{s:g}' for s in self.spacing)} mm ({self.reason})"


def parse_spacing(value: str | Sequence[float] | None) -> tuple[float, float, float] | None:
    """A voxel size ``"1,1,3"`` (or ``"1x1x3"``, ``"1 1 3"``, a sequence of three numbers) as three floats in mm.

    Raises:
        ValueError: not three positive finite numbers.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    parts = re.split(r"[,x\s]+", value.strip()) if isinstance(value, str) else list(value)
    try:
        spacing = tuple(float(p) for p in parts if p != "")
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"assume_spacing must be three positive voxel sizes in mm such as '1,1,3', got {value!r}.")
    return spacing  # type: ignore[return-value]


def _zooms(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def _mm(values: Sequence[float]) -> str:
    return "x".join(f"{v:.4g}" for v in values) + " mm"


def _usable(affine: np.ndarray) -> bool:
    a = np.asarray(affine, float)
    return bool(np.isfinite(a).all()) and abs(float(np.linalg.det(a[:3, :3]))) > 1e-6


def _check_size(path: str, shape: Sequence[int], itemsize: int, offset: int, max_voxels: int, what: str) -> None:
    """Raise where ``shape`` exceeds ``max_voxels`` or the bytes the (possibly gzipped) file can hold."""
    if any(int(n) < 0 for n in shape):
        raise ValueError(f"{path}: the {what} header gives a negative size {tuple(shape)}; is the file damaged?")
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    size = "x".join(str(int(n)) for n in shape)
    if voxels > max_voxels:
        raise ValueError(
            f"{path}: the {what} header claims {size} = {voxels:,} voxels, more than the limit of {max_voxels:,}; "
            "the header is damaged or the volume is far too large to segment."
        )
    needed = int(offset) + voxels * int(itemsize)
    on_disk = os.path.getsize(path)
    if path.lower().endswith(".gz"):
        if needed > on_disk * _MAX_DEFLATE_RATIO + (1 << 20):
            raise ValueError(
                f"{path}: the {what} header claims {size} voxels ({needed:,} bytes), more than a gzip file of "
                f"{on_disk:,} bytes can hold; the header is damaged or the file truncated."
            )
    elif needed > on_disk:
        raise ValueError(
            f"{path}: the {what} header claims {size} voxels ({needed:,} bytes) but the file has {on_disk:,} bytes; "
            "the header is damaged or the file truncated."
        )


def _geometry_problem(header: nib.Nifti1Header, ndim: int) -> str | None:
    """Why a NIfTI header's geometry cannot be trusted, or ``None``."""
    q, s = int(header["qform_code"]), int(header["sform_code"])
    n = max(min(ndim, 3), 1)
    pixdim = np.asarray(header["pixdim"][1 : 1 + n], float)
    pixdim_ok = bool(np.isfinite(pixdim).all() and (pixdim > 0).all())
    if s > 0:
        sform = header.get_sform()
        if not _usable(sform):
            return f"its sform (sform_code {s}) is singular or not finite, so it maps no voxel size"
        sform_zooms = _zooms(sform)[:n]
        if q > 0:
            qform_zooms = _zooms(header.get_qform())[:n]
            if not np.allclose(qform_zooms, sform_zooms, rtol=_RTOL):
                return f"its qform gives {_mm(qform_zooms)} voxels but its sform {_mm(sform_zooms)}"
        elif pixdim_ok and not np.allclose(pixdim, sform_zooms, rtol=_RTOL):
            return (
                f"its pixdim gives {_mm(pixdim)} voxels but its sform {_mm(sform_zooms)} (an affine replaced without "
                "its header, e.g. an identity affine on a 3 mm volume)"
            )
        return None
    if q > 0:
        if not pixdim_ok:
            return f"its qform (qform_code {q}) has voxel sizes (pixdim) {_mm(pixdim)}"
        return None
    return (
        f"it stores no geometry (qform_code and sform_code are 0; pixdim {_mm(pixdim)}), so voxel size and "
        "orientation are unknown"
    )


def _raw_header(path: str, loaded: nib.Nifti1Header) -> nib.Nifti1Header:
    """The header as stored: nibabel's loader silently replaces zero voxel sizes by 1 ("setting 0 dims to 1")."""
    if type(loaded) is not nib.Nifti1Header:
        return loaded
    with nib.openers.ImageOpener(path) as f:
        return nib.Nifti1Header.from_fileobj(f, check=False)


def check_nifti_header(
    path: str | os.PathLike, assume_spacing: str | Sequence[float] | None = None, max_voxels: int = MAX_VOXELS
) -> AssumedGeometry | None:
    """Check a NIfTI file's header (no pixel data is read): a size the file can hold, and a stored geometry.

    Args:
        path: the ``.nii`` or ``.nii.gz`` file.
        assume_spacing: voxel size in mm (``"1,1,3"``) to use where the header's geometry is refused, instead of
            raising; a file with a good geometry keeps its own.
        max_voxels: refuse headers claiming more voxels.

    Returns:
        ``None`` when the header's geometry is used, else the :class:`AssumedGeometry` to put on the volume.

    Raises:
        ValueError: the header cannot be read; it claims more voxels than ``max_voxels`` or than the file holds;
            its geometry is missing (qform and sform codes 0), has zero voxel sizes, a singular sform, or voxel
            sizes that qform, sform and pixdim disagree on, and no ``assume_spacing`` is given.
    """
    path = os.fspath(path)
    try:
        img = nib.load(path)
        header = _raw_header(path, img.header)
        shape = tuple(int(n) for n in header.get_data_shape())
        itemsize = header.get_data_dtype().itemsize
        offset = int(header.get_data_offset()) if hasattr(header, "get_data_offset") else 0
    except Exception as e:
        raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e}); is the file complete?") from e
    _check_size(path, shape, itemsize, offset, max_voxels, "NIfTI")
    if not isinstance(header, nib.Nifti1Header):  # NIfTI-2 and others: only the size is checked
        return None
    problem = _geometry_problem(header, len(shape))
    if problem is None:
        return None
    spacing = parse_spacing(assume_spacing)
    if spacing is None:
        raise ValueError(
            f"{path}: no usable voxel geometry: {problem}. Volumes (mL) and masks would be wrong. Fix the header "
            "(e.g. convert the DICOM again with dcm2niix), or give the voxel size explicitly with assume_spacing "
            "(e.g. '1,1,3' mm)."
        )
    best = np.asarray(img.affine, float)
    directions = best[:3, :3] / _zooms(best) if _usable(best) else np.eye(3)
    affine = np.eye(4)
    affine[:3, :3] = directions * np.asarray(spacing)
    if np.isfinite(best[:3, 3]).all():
        affine[:3, 3] = best[:3, 3]
    return AssumedGeometry(affine=affine, spacing=spacing, reason=problem)


def check_nrrd_header(path: str | os.PathLike, max_voxels: int = MAX_VOXELS) -> None:
    """Refuse an NRRD header claiming more voxels than ``max_voxels`` or than its data file holds (no pixels read).

    Raises:
        ValueError: the header cannot be read, or claims too many voxels.
    """
    path = os.fspath(path)
    try:
        header = nrrd.read_header(path)
        shape = [int(n) for n in np.atleast_1d(header["sizes"])]
        itemsize = nrrd.reader._determine_datatype(header).itemsize
    except Exception as e:
        raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e}); is the file complete?") from e
    voxels = int(np.prod(shape, dtype=object))
    if voxels > max_voxels:
        _check_size(path, shape, itemsize, 0, max_voxels, "NRRD")
    encoding = str(header.get("encoding", "raw")).lower()
    data_file = header.get("data file") or header.get("datafile")
    if data_file is None and encoding == "raw":
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        end = head.find(b"\n\n")
        offset = end + 2 if end >= 0 else 0
        _check_size(path, shape, itemsize, offset, max_voxels, "NRRD")
    elif data_file is None and encoding in ("gzip", "gz"):
        needed = voxels * itemsize
        on_disk = os.path.getsize(path)
        if needed > on_disk * _MAX_DEFLATE_RATIO + (1 << 20):
            raise ValueError(
                f"{path}: the NRRD header claims {'x'.join(map(str, shape))} voxels ({needed:,} bytes), more than "
                f"gzip data of {on_disk:,} bytes can hold; the header is damaged or the file truncated."
            )
