# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""A PNG of one axial slice with a segmentation drawn over it, to look at what ``pyconv-monai segment`` wrote.

``python -m pyconv_monai.visualize.overlay IMAGE MASK OUT.png`` reads the image (a DICOM series folder or a volume,
with the project's readers) and the mask (``<case>_seg.nii.gz``), puts both in radiological display (patient's right
on the left, anterior at the top), picks the slice with the largest mask area (or ``--slice``) and writes the CT in a
window beside the same slice with the mask in red; ``--reference LABEL --reference-value V`` outlines a reference
segmentation (voxels equal to ``V``) in green.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from monai.transforms import LoadImage
from PIL import Image
from pyconv_monai.data.formats import get_reader
from pyconv_monai.data.meta import tracking_meta
from pyconv_monai.utils import atomic_write
from scipy.ndimage import binary_erosion

__all__ = ["display_volume", "overlay_slice", "write_overlay", "main"]

DISPLAY = "LPS"  # array axes (x: to the patient's left, y: to posterior, z: to superior); slice.T is display order


def display_volume(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (x, y, z) with ``affine`` (voxel to RAS mm) reoriented to LPS axes.

    Returns:
        the reoriented array and its affine.
    """
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(DISPLAY)
    )
    out = nib.orientations.apply_orientation(array, ornt)
    return out, affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)


def _load(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Array (x, y, z) and RAS affine of an image (DICOM series or volume, the project's readers) or a NIfTI."""
    path = os.fspath(path)
    if path.endswith((".nii", ".nii.gz")):
        img = nib.load(path)
        return np.asarray(img.dataobj), np.asarray(img.affine, float)
    with tracking_meta():
        vol = LoadImage(image_only=True)(path, reader=get_reader(path))
    return np.asarray(vol), np.asarray(vol.affine, float)


def _same_grid(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], what: str) -> None:
    if a[0].shape[:3] != b[0].shape[:3] or not np.allclose(a[1], b[1], atol=1e-2):
        raise ValueError(
            f"{what} is not on the image's voxel grid: shape {b[0].shape} vs {a[0].shape}, affine\n{b[1]}\nvs\n{a[1]}"
        )


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~binary_erosion(mask, iterations=2)


def overlay_slice(
    image: np.ndarray,
    mask: np.ndarray,
    reference: np.ndarray | None = None,
    window: tuple[float, float] = (400.0, 40.0),
    alpha: float = 0.45,
) -> np.ndarray:
    """RGB ``(H, 2W, 3)`` uint8: the windowed slice, and the same slice with ``mask`` in red (and ``reference``
    outlined in green). Inputs are 2D arrays in display order (rows, columns).

    Args:
        image: the slice, in HU (or any intensity ``window`` fits).
        mask: the segmentation (non-zero is foreground).
        reference: an optional reference segmentation to outline.
        window: width and level of the display window.
        alpha: opacity of the red fill.
    """
    width, level = window
    gray = np.clip((image.astype(np.float32) - (level - width / 2)) / width, 0, 1) * 255
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    over = rgb.copy()
    m = mask > 0
    over[m] = (1 - alpha) * over[m] + alpha * np.array([255.0, 0.0, 0.0])
    over[_outline(m)] = (255.0, 60.0, 60.0)
    if reference is not None:
        over[_outline(reference > 0)] = (0.0, 255.0, 0.0)
    gap = np.full((rgb.shape[0], 4, 3), 255.0)
    return np.concatenate([rgb, gap, over], axis=1).round().astype(np.uint8)


def write_overlay(
    image: str | os.PathLike,
    mask: str | os.PathLike,
    out_png: str | os.PathLike,
    slice_index: int | None = None,
    reference: str | os.PathLike | None = None,
    reference_value: int | None = None,
    window: tuple[float, float] = (400.0, 40.0),
    overwrite: bool = False,
) -> dict:
    """Write the overlay PNG of one axial slice (see :func:`overlay_slice`).

    Args:
        image: DICOM series folder or volume file.
        mask: the mask volume on the image's grid (``pyconv-monai segment``'s ``<case>_seg.nii.gz``).
        out_png: the PNG to write (atomically; an existing file is kept unless ``overwrite``).
        slice_index: axial slice, counted from inferior (default: the slice with the largest mask area).
        reference: a label volume of the same scan, possibly in another orientation.
        reference_value: the label of ``reference`` to outline (default: every non-zero voxel).
        window: CT display window, width and level.
        overwrite: replace an existing ``out_png``.

    Returns:
        ``slice`` (the index used), ``mask_pixels`` and ``reference_pixels`` (on that slice), and with a reference
        ``mask_ml`` and ``reference_ml`` (whole volume) and ``dice``: 2|A∩B| / (|A| + |B|) of mask and reference
        over the whole volume.

    Raises:
        FileExistsError: ``out_png`` exists and ``overwrite`` is False.
        ValueError: the mask or the reference is not on the image's grid; the slice is out of range.
    """
    out_png = os.fspath(out_png)
    if os.path.lexists(out_png) and not overwrite:
        raise FileExistsError(f"{out_png} exists; pass overwrite=True (--overwrite) to replace it")
    img = display_volume(*_load(image))
    seg = display_volume(*_load(mask))
    _same_grid(img, seg, f"the mask {mask}")
    ref = None
    if reference is not None:
        ref = display_volume(*_load(reference))
        _same_grid(img, ref, f"the reference {reference}")
        ref = (ref[0] == reference_value) if reference_value is not None else ref[0] != 0
    area = (seg[0] > 0).sum(axis=(0, 1))
    voxel_ml = float(abs(np.linalg.det(img[1][:3, :3]))) / 1000.0
    k = int(np.argmax(area)) if slice_index is None else int(slice_index)
    if not 0 <= k < img[0].shape[2]:
        raise ValueError(f"slice {k} is out of range: the image has {img[0].shape[2]} axial slices")
    picture = overlay_slice(img[0][:, :, k].T, seg[0][:, :, k].T, None if ref is None else ref[:, :, k].T, window)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    with atomic_write(out_png, overwrite=overwrite) as tmp:  # no-clobber, even if the file appeared meanwhile
        Image.fromarray(picture).save(tmp, format="PNG", optimize=True)
    return {
        "slice": k,
        "mask_pixels": int(area[k]),
        "reference_pixels": None if ref is None else int(ref[:, :, k].sum()),
        "mask_ml": int((seg[0] > 0).sum()) * voxel_ml,
        "reference_ml": None if ref is None else int(ref.sum()) * voxel_ml,
        "dice": None if ref is None else _dice(seg[0] > 0, ref),
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m pyconv_monai.visualize.overlay IMAGE MASK OUT.png [--slice K]
    [--reference L --reference-value V]``."""
    parser = argparse.ArgumentParser(prog="python -m pyconv_monai.visualize.overlay",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("image", help="DICOM series folder or volume")
    parser.add_argument("mask", help="mask volume on the image's grid, e.g. <case>_seg.nii.gz")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--slice", type=int, help="axial slice from inferior (default: largest mask area)")
    parser.add_argument("--reference", help="a reference label volume of the same scan, outlined in green")
    parser.add_argument("--reference-value", type=int, help="the reference label to outline (default: all)")
    parser.add_argument("--window", type=float, nargs=2, default=(400.0, 40.0), metavar=("WIDTH", "LEVEL"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    args = parser.parse_args(argv)
    try:
        info = write_overlay(args.image, args.mask, args.out, args.slice, args.reference, args.reference_value,
                             tuple(args.window), args.overwrite)  # fmt: skip
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"pyconv_monai.visualize.overlay: error: {e}", file=sys.stderr)
        return 2
    text = f"wrote {args.out}: slice {info['slice']}, mask {info['mask_pixels']} pixels"
    text += f"; volume: mask {info['mask_ml']:.2f} mL"
    if info["dice"] is not None:
        text += (f", reference {info['reference_ml']:.2f} mL; Dice of mask and reference (whole volume) "
                 f"{info['dice']:.4f}")  # fmt: skip
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
