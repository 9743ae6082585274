# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Refuse images of another modality than the model's (an MR series given to a CT model)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["RequireModalityd"]


class RequireModalityd(MapTransform):
    """Raise when an image's meta ``modality`` (DICOM series, read by :class:`pyconv_monai.transforms.LoadVolumed`)
    is not ``modality``; a DICOM series without one is refused too. Images of kinds that carry no modality (NIfTI,
    NRRD, TIFF, PNG, volumes loaded by a client) pass.

    Args:
        keys: the image key(s).
        modality: e.g. ``"CT"``; ``None`` or ``""``: any.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        ValueError: (on call) another modality, named with what the bundle segments.
    """

    def __init__(self, keys: KeysCollection, modality: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modality = (modality or "").upper()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = img.meta if isinstance(img, MetaTensor) else {}
            found = str(meta.get("modality", "") or "")
            dicom = meta.get("kind") == "dicom_series"
            if self.modality and (found or dicom) and found.upper() != self.modality:
                raise ValueError(
                    f"modality {found or 'unknown'!r}: this bundle segments {self.modality} images; "
                    "the series was not processed"
                )
        return d
