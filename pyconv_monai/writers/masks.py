# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Binary masks as files that viewers open on top of their image: NIfTI (with the image's affine), TIFF, PNG.

Every writer goes through :func:`pyconv_monai.utils.atomic_write`: a killed run leaves no partial file under the
final name, and an existing file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

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
    img = nib.Nifti1Image(_binary(mask, value), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"pyconv-monai binary mask"
    with atomic_write(path, overwrite=overwrite) as tmp:
        nib.save(img, tmp)
    return os.fspath(path)


def write_tiff_mask(mask: np.ndarray, path: str | os.PathLike, overwrite: bool = False, value: int = 255) -> str:
    """Write a binary mask as an 8-bit TIFF: one page for ``(H, W)``, a multi-page stack for ``(H, W, N)``.

    The page order and size match the input stack (``pyconv_monai.data.TiffReader`` puts pages last), so page ``i``
    is the mask of page ``i``. Deflate compressed; values ``0``/``value`` (255: as the training masks).

    Returns:
        ``path``.

    Raises:
        ValueError: the mask is not 2D or 3D.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    import tifffile

    mask = _binary(mask, value)
    if mask.ndim == 3:
        mask = np.ascontiguousarray(np.moveaxis(mask, -1, 0))  # (N, H, W): pages first, as tifffile writes
    elif mask.ndim != 2:
        raise ValueError(f"expected a mask (H, W) or (H, W, N), got shape {mask.shape}.")
    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, mask, photometric="minisblack", compression="zlib")
    return os.fspath(path)


def write_png_mask(mask: np.ndarray, path: str | os.PathLike, overwrite: bool = False, value: int = 255) -> str:
    """Write a 2D binary mask ``(H, W)`` as an 8-bit grayscale PNG with values ``0``/``value``.

    Returns:
        ``path``.

    Raises:
        ValueError: the mask is not 2D.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    from PIL import Image

    mask = _binary(mask, value)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask (H, W), got shape {mask.shape}.")
    with atomic_write(path, overwrite=overwrite) as tmp:
        Image.fromarray(mask).save(tmp, format="PNG")
    return os.fspath(path)
