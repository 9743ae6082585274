# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Reproducible train/validation splits that never put one case (or group of slices) on both sides."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

__all__ = ["split_datalist"]


def split_datalist(
    datalist: Sequence[dict],
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | Callable[[dict], Hashable] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Split a datalist into training and validation items (80/20 by default, as in the PyConvU-Net paper).

    Items are grouped by ``group_key`` (``"case"`` when ``None``), groups are shuffled with ``seed`` in an order that
    does not depend on the datalist's order, and whole groups go to validation until it holds the share of items
    closest to ``val_fraction``. Use ``group_key="volume"`` to keep all slices of a stack or volume on one side
    (neighbouring slices are strongly correlated).

    Args:
        datalist: items with a ``"case"`` key (and ``group_key``, if given).
        val_fraction: share of items for validation, in ``[0, 1)``.
        seed: seed of the shuffle; the same seed gives the same split.
        group_key: item key or function of an item giving its group; items missing the key form their own group.

    Returns:
        ``(train, val)``, each in the datalist's order. With at least two groups and ``val_fraction > 0``, both are
        non-empty.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)``, an empty datalist, or items without ``"case"``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if not datalist:
        raise ValueError("cannot split an empty datalist.")

    def group_of(i: int, item: dict) -> str:
        if callable(group_key):
            return repr(group_key(item))
        key = group_key or "case"
        if key in item:
            return repr(item[key])
        if group_key is not None and "case" in item:
            return repr(("case", item["case"]))
        raise ValueError(f"datalist item {i} has no {key!r} key: {item}")

    groups = [group_of(i, item) for i, item in enumerate(datalist)]
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    names = sorted(sizes)
    order = np.random.default_rng(seed).permutation(len(names))
    target = val_fraction * len(datalist)
    val_groups: set[str] = set()
    count = 0
    for i in order:
        name = names[i]
        if abs(count + sizes[name] - target) < abs(count - target):
            val_groups.add(name)
            count += sizes[name]
    if val_fraction > 0 and len(names) > 1:
        if not val_groups:  # every group is larger than twice the target: take the smallest
            val_groups.add(min(names, key=lambda n: (sizes[n], n)))
        if len(val_groups) == len(names):
            val_groups.discard(names[order[0]])
    train = [item for item, g in zip(datalist, groups) if g not in val_groups]
    val = [item for item, g in zip(datalist, groups) if g in val_groups]
    return train, val
