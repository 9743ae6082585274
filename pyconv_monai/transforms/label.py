# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Label transforms: binarise {0, 255} masks, refusing masks that are not binary (thresholding is MONAI's
``AsDiscrete``), and map multi-class label values."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = ["BinarizeLabel", "BinarizeLabeld", "MapLabels", "MapLabelsd"]


def _name(img: torch.Tensor) -> str:
    if isinstance(img, MetaTensor):
        return str(img.meta.get("filename_or_obj", "label"))
    return "label"


def _listing(values: torch.Tensor, limit: int = 10) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit].tolist())
    return f"{{{shown}{', ...' if len(values) > limit else ''}}}"


class BinarizeLabel(Transform):
    """Turn a binary mask into ``{0, 1}``: ``{0, 255}`` (or any ``{0, v}``) becomes ``{0, 1}``; refuse any other mask.

    What MONAI's ``AsDiscrete(threshold=...)`` does not: it checks that the mask holds at most one non-zero value and
    names the file when it does not (a multi-class label or a mask saved with interpolation, which a threshold would
    silently merge or cut). For such masks, threshold with ``AsDiscrete(threshold=...)`` or map the classes with
    :class:`MapLabels` instead.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Returns:
            the mask in ``{0, 1}``, of the input's type and dtype.

        Raises:
            ValueError: the mask holds more than one non-zero value.
        """
        img_t = convert_to_tensor(img, track_meta=True)
        raw = img_t.as_tensor() if isinstance(img_t, MetaTensor) else img_t
        values = torch.unique(raw)
        nonzero = values[values != 0]
        if len(nonzero) > 1:
            raise ValueError(
                f"{_name(img_t)}: not a binary mask, values {_listing(values)}; expected {{0, 255}} or {{0, 1}}. "
                "Binarise with a threshold (MONAI's AsDiscreted(threshold=127)) or map the classes with MapLabelsd."
            )
        return convert_to_dst_type(raw != 0, img)[0]  # the input's type and dtype


class BinarizeLabeld(MapTransform):
    """Dictionary version of :class:`BinarizeLabel`.

    Args:
        keys: keys of the masks.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = BinarizeLabel.backend

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.binarize = BinarizeLabel()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.binarize(d[key])
        return d


class MapLabels(Transform):
    """Map label values to new ones, e.g. TotalSegmentator's ``{5: 1}`` (liver) or ``{1: 1, 2: 2}``.

    Unlike MONAI's ``MapLabelValue``, values missing from ``mapping`` are not kept: they become ``default``, or
    raise ``ValueError`` when ``default`` is ``None``.

    Args:
        mapping: source value to target value (integers).
        default: target of every unlisted value; ``None`` to raise on unlisted values instead.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mapping: Mapping[int, int], default: int | None = 0) -> None:
        if not mapping:
            raise ValueError("mapping must not be empty.")
        self.mapping = {int(k): int(v) for k, v in mapping.items()}
        self.default = default

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Returns:
            the mapped label, of the input's type and dtype.

        Raises:
            ValueError: non-integer label values, or unlisted values with ``default=None``.
        """
        img_t = convert_to_tensor(img, track_meta=True)
        raw = img_t.as_tensor() if isinstance(img_t, MetaTensor) else img_t
        values, inverse = torch.unique(raw, return_inverse=True)
        if raw.is_floating_point() and not torch.equal(values, torch.round(values)):
            raise ValueError(f"{_name(img_t)}: label values {_listing(values)} are not integers.")
        unlisted = [v for v in values.long().tolist() if v not in self.mapping]
        if unlisted and self.default is None:
            raise ValueError(
                f"{_name(img_t)}: label values {unlisted[:10]} are not in the mapping {self.mapping}; "
                "give default=0 to map them to background."
            )
        targets = [self.mapping.get(v, self.default) for v in values.long().tolist()]
        table = torch.tensor(targets, dtype=raw.dtype, device=raw.device)
        return convert_to_dst_type(table[inverse], img)[0]


class MapLabelsd(MapTransform):
    """Dictionary version of :class:`MapLabels`.

    Args:
        keys: keys of the labels.
        mapping, default: see :class:`MapLabels`.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = MapLabels.backend

    def __init__(
        self,
        keys: KeysCollection,
        mapping: Mapping[int, int],
        default: int | None = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.map = MapLabels(mapping, default)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.map(d[key])
        return d
