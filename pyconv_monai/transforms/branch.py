# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""One recipe for two kinds of input: volumes with patient geometry (HU) and pictures without it (TIFF, PNG).

A CT bundle trained on 8-bit slices segments both a DICOM series (oriented, resampled to the training pixel spacing,
CT window) and one of its training PNGs (scaled as trained). :class:`ByGeometryd` says so in the config, as one
invertible step of ``preprocessing``, so every client that runs ``preprocessing`` and ``Invertd`` gets the same
recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, InvertibleTransform, MapTransform
from monai.utils import TraceKeys, ensure_tuple
from pyconv_monai.data.formats import GEOMETRY_KINDS

__all__ = ["ByGeometryd", "has_geometry"]


def has_geometry(img: Any) -> bool:
    """Whether an image carries patient geometry: a file of a kind with it (meta ``kind`` set by
    :class:`pyconv_monai.transforms.LoadVolumed`: DICOM, NIfTI, NRRD), or a loaded volume without ``kind`` (what
    MONAI Deploy and MONAI Label pass: a volume with its affine)."""
    kind = img.meta.get("kind") if isinstance(img, MetaTensor) else None
    return kind is None or kind in GEOMETRY_KINDS


class ByGeometryd(MapTransform, InvertibleTransform):
    """Apply ``geometry`` to images with patient geometry and ``other`` to pictures without it (TIFF, PNG).

    ``inverse`` (MONAI's ``Invertd``) undoes the branch that was applied: the choice is recorded on the first key's
    MetaTensor, after the branch's own operations.

    Args:
        keys: the image key(s); the first decides the branch (see :func:`has_geometry`).
        geometry: transforms for volumes with geometry (e.g. orientation, in-plane spacing, CT window).
        other: transforms for pictures (e.g. the training scaling).
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        geometry: Callable | Sequence[Callable] = (),
        other: Callable | Sequence[Callable] = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.geometry = geometry if isinstance(geometry, Compose) else Compose(list(ensure_tuple(geometry)))
        self.other = other if isinstance(other, Compose) else Compose(list(ensure_tuple(other)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.first_key(d)
        if key == ():
            return d
        branch = "geometry" if has_geometry(d[key]) else "other"
        d = dict(getattr(self, branch)(d))
        if isinstance(d[key], MetaTensor):
            self.push_transform(d[key], extra_info={"branch": branch})
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.first_key(d)
        if key == () or not isinstance(d[key], MetaTensor):
            return d
        branch = self.pop_transform(d[key])[TraceKeys.EXTRA_INFO]["branch"]
        return dict(getattr(self, branch).inverse(d))
