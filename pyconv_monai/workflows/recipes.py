# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The transform lists that every segmentation bundle of this project builds in the same way.

Each function returns ordinary MONAI transforms; the bundle config passes every value that differs between bundles
(intensity transform, augmentation, patch size) explicitly. Handlers, metrics and post-processing are spelled out in
the bundle configs themselves, so that each can be overridden by its config id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.transforms import AsDiscreted, RandSpatialCropd
from monai.utils import ensure_tuple
from pyconv_monai.transforms import BinarizeLabeld, LoadSlice2Dd, pyconvunet_augmentation, unet_augmentation

__all__ = ["load_transforms", "augmentation", "case_names"]


def load_transforms(intensity: Callable | Sequence[Callable] = (), label_threshold: float | None = None) -> list:
    """Load a datalist item as ``(1, H, W)`` image and binary label, then apply the bundle's intensity transform.

    Args:
        intensity: the bundle's intensity transform(s) for ``image`` (CT window, EM normalisation, scaling).
        label_threshold: ``None``: masks must be binary (``{0, 255}`` or ``{0, 1}``, else a ``ValueError`` names the
            file; :class:`pyconv_monai.transforms.BinarizeLabeld`); a number: MONAI's ``AsDiscreted``, foreground is
            ``label >= label_threshold``, unchecked (masks saved with interpolation or lossy compression).

    Returns:
        ``[LoadSlice2Dd, *intensity, BinarizeLabeld or AsDiscreted]``; either gives a ``float32`` label in ``{0, 1}``.
    """
    if label_threshold is None:
        binarize = BinarizeLabeld("label")
    else:
        binarize = AsDiscreted("label", threshold=label_threshold)
    return [LoadSlice2Dd(keys=("image", "label")), *ensure_tuple(intensity), binarize]


def augmentation(
    name: str | None = "pyconvunet", patch_size: Sequence[int] | None = None, keys: Sequence[str] = ("image", "label")
) -> list:
    """Random training transforms: an optional random patch, then the paper's augmentation.

    Args:
        name: ``"pyconvunet"`` (flips, 90/180 degree rotations), ``"unet"`` (shifts, rotations, elastic
            deformation, gray values) or ``None``.
        patch_size: train on random patches of this size instead of whole slices (``None``: whole slices, as
            the paper).
        keys: keys to transform together.

    Raises:
        ValueError: for an unknown augmentation name.
    """
    out: list = []
    if patch_size is not None:
        out.append(RandSpatialCropd(keys=keys, roi_size=list(patch_size), random_size=False))
    if name == "pyconvunet":
        out.append(pyconvunet_augmentation(keys))
    elif name == "unet":
        out.append(unet_augmentation(keys))
    elif name is not None:
        raise ValueError(f"unknown augmentation {name!r}; choose 'pyconvunet', 'unet' or None.")
    return out


def case_names(batch: Any) -> list[dict[str, str]]:
    """Per-item names for ``MetricsSaver``: the datalist's ``case`` (slices of one stack share a file name)."""
    return [{"filename_or_obj": str(b.get("case", b["image"].meta.get("filename_or_obj", "")))} for b in batch]
