# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""2D slices from loaded volumes with MONAI's ``GridPatchDataset``/``PatchIterd``, keeping each slice's geometry.

``PatchIterd(patch_size=(None, None, 1))`` yields ``(C, H, W, 1)`` patches that keep the volume's affine, so a
slice no longer knows where it lies; :class:`SliceIterd` squeezes the slice axis and moves the affine to the slice.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import CacheDataset, Dataset, GridPatchDataset, PatchIterd
from monai.transforms import Compose
from monai.utils import ensure_tuple

from .geometry import take_slice

__all__ = ["SliceIterd", "volume_slice_dataset"]


class SliceIterd(PatchIterd):
    """Iterate over the slices along the last spatial axis of channel-first 3D volumes, for ``GridPatchDataset``.

    Yields ``(item, coords)`` like ``PatchIterd``; in ``item`` every key in ``keys`` is a ``(C, H, W)`` slice whose
    affine is the volume's moved to the slice, ``slice_key`` holds the slice index, and ``case_key`` (if the
    volume item has it) becomes ``"<case>_s<index>"``.

    Args:
        keys: keys of the volumes to slice (same spatial shape).
        slice_key: item key for the slice index.
        case_key: item key of the case id to extend per slice.
    """

    def __init__(self, keys: KeysCollection, slice_key: str = "slice", case_key: str = "case") -> None:
        super().__init__(keys=keys, patch_size=(None, None, 1), mode=None)
        self.slice_key = slice_key
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Generator[tuple[dict, np.ndarray], None, None]:
        for key in self.keys:
            if data[key].ndim != 4:
                raise ValueError(f"item[{key!r}] has shape {tuple(data[key].shape)}; expected (C, H, W, N) volumes.")
        n = data[self.keys[0]].shape[-1]
        width = max(3, len(str(n - 1)))
        for patch, coords in super().__call__(data):
            index = int(coords[-1][0])
            for key in self.keys:
                patch[key] = take_slice(patch[key], 0, position=index)
            patch[self.slice_key] = index
            if self.case_key in data:
                patch[self.case_key] = f"{data[self.case_key]}_s{index:0{width}d}"
            yield patch, coords


def volume_slice_dataset(
    data: Sequence[dict],
    volume_transform: Callable,
    slice_transform: Callable | Sequence[Callable] | None = None,
    keys: KeysCollection = ("image", "label"),
    cache_rate: float = 0.0,
    num_workers: int | None = 1,
) -> GridPatchDataset:
    """A ``GridPatchDataset`` of the 2D slices of volumes: each volume item is loaded with ``volume_transform``
    (e.g. :class:`pyconv_monai.transforms.LoadVolumed`), cut into slices along its last axis by
    :class:`SliceIterd`, and each slice goes through ``slice_transform``.

    The dataset is iterable and yields slices volume by volume; for shuffled training batches prefer the
    per-slice datalist of :func:`pyconv_monai.data.load_datalist` with ``LoadSlice2Dd`` and a ``CacheDataset``.

    Args:
        data: volume items, e.g. ``{"image": ".../ct.nii.gz", "label": ".../seg.nii.gz", "case": "ct"}``.
        volume_transform: loads one item into channel-first volumes ``(C, H, W, N)``.
        slice_transform: applied to each slice item (normalisation, augmentation).
        keys: keys to slice.
        cache_rate: share of loaded volumes to keep in memory (MONAI ``CacheDataset``).
        num_workers: threads used to fill the cache.

    Returns:
        the dataset; iterating it yields slice dicts (no coordinates tuple).
    """
    if cache_rate > 0:
        volumes: Dataset = CacheDataset(data, volume_transform, cache_rate=cache_rate, num_workers=num_workers)
    else:
        volumes = Dataset(data, volume_transform)
    if slice_transform is not None and not isinstance(slice_transform, Compose):
        slice_transform = Compose(list(ensure_tuple(slice_transform)))
    return GridPatchDataset(
        data=volumes, patch_iter=SliceIterd(keys), transform=slice_transform, with_coordinates=False
    )
