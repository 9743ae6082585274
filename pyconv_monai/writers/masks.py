# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Binary masks as files that viewers open on top of their image: NIfTI (with the image's affine), TIFF, PNG.

NIfTI and PNG are written by MONAI's ``NibabelWriter`` and ``PILWriter`` (what ``SaveImage`` uses); this module adds
the layer on top: every file goes through :func:`pyconv_monai.utils.atomic_write`, so a killed run leaves no partial
file under the final name, and an existing file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import tifffile
from monai.data import NibabelWriter, PILWriter
from pyconv_monai.utils import atomic_write

__all__ = ["MASK_SUFFIXES", "mask_suffix", "write_nifti_mask", "write_png_mask", "write_tiff_mask"]

# the mask file type written for each input kind (see pyconv_monai.data.image_kind)
MASK_SUFFIXES: dict[str, str] = {
    "dicom_series": ".nii.gz",
    "dicom": ".nii.gz",
    "nifti": ".nii.gz",
    "nrrd": ".nii.gz",
    "tiff": ".tif",
    "image2d": ".png",
}


def mask_suffix(kind: str) -> str:
    """File extension of the mask written for an input of ``kind`` (NIfTI for volumes, TIFF for TIFF, PNG for 2D).

    Raises:
        ValueError: unknown kind.
    """
    if kind not in MASK_SUFFIXES:
        raise ValueError(f"no mask format for input kind {kind!r}; known: {sorted(MASK_SUFFIXES)}.")
    return MASK_SUFFIXES[kind]


def _binary(mask: np.ndarray, value: int) -> np.ndarray:
    mask = np.asarray(mask)
    return np.where(mask > 0, np.uint8(value), np.uint8(0)).astype(np.uint8)


def _set_mask(writer: NibabelWriter | PILWriter, mask: np.ndarray) -> None:
    """Give a MONAI writer a mask without a channel axis, keeping trailing size-1 axes (a one-slice volume stays 3D,
    which ``set_data_array``'s ``squeeze_end_dims`` would make 2D)."""
    writer.set_data_array(mask, channel_dim=None, squeeze_end_dims=False)
    writer.data_obj = writer.data_obj[..., 0]  # the channel axis that channel_dim=None appended


def write_nifti_mask(
    mask: np.ndarray, affine: np.ndarray, path: str | os.PathLike, overwrite: bool = False, value: int = 1
) -> str:
    """Write a 3D binary mask as a ``uint8`` NIfTI-1 file whose voxel grid is ``affine`` (RAS, as nibabel).

    Both the sform and the qform hold the affine (code 1, scanner coordinates), units are mm, so 3D Slicer, ITK-SNAP,
    FSLeyes and OHIF overlay the mask on the image with the same affine.

    Args:
        mask: array ``(X, Y, Z)`` in the image's stored voxel order (nonzero is foreground).
        affine: 4x4 voxel-to-RAS affine of that array (the image's ``original_affine``).
        path: the ``.nii.gz`` (or ``.nii``) file.
        overwrite: replace an existing file.
        value: the label value of foreground voxels.

    Returns:
        ``path``.

    Raises:
        ValueError: the mask is not 3D or the affine not 4x4.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    mask = np.asarray(mask)
    affine = np.asarray(affine, dtype=np.float64)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask (X, Y, Z), got shape {mask.shape}.")
    if affine.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {affine.shape}.")
    writer = NibabelWriter(output_dtype=np.uint8)
    _set_mask(writer, _binary(mask, value))
    writer.affine = affine  # already on the image grid; set_metadata would still make a float32 copy of it
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)  # a given header sets the stored type
    header.set_xyzt_units("mm")
    header["descrip"] = b"pyconv-monai binary mask"
    with atomic_write(path, overwrite=overwrite) as tmp:
        writer.write(tmp, header=header)  # sform and qform: the affine, code 1
    return os.fspath(path)


def write_tiff_mask(mask: np.ndarray, path: str | os.PathLike, overwrite: bool = False, value: int = 255) -> str:
    """Write a binary mask as an 8-bit TIFF: one page for ``(H, W)``, a multi-page stack for ``(H, W, N)``.

    The page order and size match the input stack (``pyconv_monai.data.TiffReader`` puts pages last), so page ``i``
    is the mask of page ``i``. Deflate compressed; values ``0``/``value`` (255: as the training masks). Written with
    tifffile: MONAI has no multi-page TIFF writer (its ``PILWriter``, registered for ``.tif``, writes one page and
    takes a last axis for colour channels; ``ITKWriter`` needs ``itk``, not a dependency).

    Returns:
        ``path``.

    Raises:
        ValueError: the mask is not 2D or 3D.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    mask = _binary(mask, value)
    if mask.ndim == 3:
        mask = np.ascontiguousarray(np.moveaxis(mask, -1, 0))  # (N, H, W): pages first, as tifffile writes
    elif mask.ndim != 2:
        raise ValueError(f"expected a mask (H, W) or (H, W, N), got shape {mask.shape}.")
    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, mask, photometric="minisblack", compression="zlib")
    return os.fspath(path)


def write_png_mask(mask: np.ndarray, path: str | os.PathLike, overwrite: bool = False, value: int = 255) -> str:
    """Write a 2D binary mask ``(H, W)`` as an 8-bit grayscale PNG (values ``0``/``value``) with MONAI's ``PILWriter``.

    Returns:
        ``path``.

    Raises:
        ValueError: the mask is not 2D.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    mask = _binary(mask, value)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask (H, W), got shape {mask.shape}.")
    writer = PILWriter(output_dtype=np.uint8, channel_dim=None, scale=None)  # values already 0/value, uint8
    _set_mask(writer, mask)
    writer.set_metadata(None, resample=False)
    with atomic_write(path, overwrite=overwrite) as tmp:
        writer.write(tmp, reverse_indexing=False, format="PNG")  # (H, W) rows as rows, mode "L"
    return os.fspath(path)
