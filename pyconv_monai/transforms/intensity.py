# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Intensity normalisation: CT windows with named presets, and EM normalisation; thin presets over MONAI's scalers."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.transforms import (
    MapTransform,
    NormalizeIntensity,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentiles,
    Transform,
)

__all__ = ["CT_WINDOWS", "CTWindow", "CTWindowd", "EM_NORMALISATIONS", "NormalizeEM", "NormalizeEMd", "ct_window_range"]

# (window width, window level) in HU, as radiology viewers' presets (Radiopaedia "Windowing (CT)").
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "abdomen": (400.0, 50.0),
    "soft_tissue": (400.0, 50.0),
    "liver": (150.0, 30.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}
EM_NORMALISATIONS = ("fixed", "percentile", "zscore")


def ct_window_range(
    preset: str | None = "lung", window: float | None = None, level: float | None = None
) -> tuple[float, float]:
    """The HU range ``(level - window / 2, level + window / 2)`` of a preset, with ``window``/``level`` overriding it.

    Args:
        preset: a key of :data:`CT_WINDOWS`, or ``None`` when both ``window`` and ``level`` are given.
        window: window width in HU (> 0).
        level: window centre in HU.

    Raises:
        ValueError: unknown preset, a missing value without preset, or a width that is not positive.
    """
    if preset is not None:
        if preset not in CT_WINDOWS:
            raise ValueError(
                f"unknown CT window preset {preset!r}; choose one of {sorted(CT_WINDOWS)} or window/level."
            )
        w, c = CT_WINDOWS[preset]
        window = w if window is None else window
        level = c if level is None else level
    if window is None or level is None:
        raise ValueError("give a preset, or both window and level.")
    if window <= 0:
        raise ValueError(f"window width must be positive, got {window}.")
    return level - window / 2.0, level + window / 2.0


class CTWindow(ScaleIntensityRange):
    """Map a CT window (HU) to ``out_range``, clipping values outside it.

    Args:
        preset: a key of :data:`CT_WINDOWS` (``"lung"``: W 1500 / L -600, ``"abdomen"``: 400 / 50, ``"liver"``:
            150 / 30, ...), or ``None`` with ``window`` and ``level``.
        window: window width in HU, overriding the preset's.
        level: window level (centre) in HU, overriding the preset's.
        out_range: output range of the window.
        dtype: output dtype.
    """

    def __init__(
        self,
        preset: str | None = "lung",
        window: float | None = None,
        level: float | None = None,
        out_range: tuple[float, float] = (0.0, 1.0),
        dtype: DtypeLike = np.float32,
    ) -> None:
        a_min, a_max = ct_window_range(preset, window, level)
        super().__init__(a_min=a_min, a_max=a_max, b_min=out_range[0], b_max=out_range[1], clip=True, dtype=dtype)


class CTWindowd(ScaleIntensityRanged):
    """Dictionary version of :class:`CTWindow`.

    Args:
        keys: keys of the CT images (in HU).
        preset, window, level, out_range, dtype: see :class:`CTWindow`.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        preset: str | None = "lung",
        window: float | None = None,
        level: float | None = None,
        out_range: tuple[float, float] = (0.0, 1.0),
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        a_min, a_max = ct_window_range(preset, window, level)
        super().__init__(
            keys,
            a_min=a_min,
            a_max=a_max,
            b_min=out_range[0],
            b_max=out_range[1],
            clip=True,
            dtype=dtype,
            allow_missing_keys=allow_missing_keys,
        )


class NormalizeEM(Transform):
    """Normalise an EM image.

    Modes: ``"fixed"`` maps ``[0, max_value]`` to ``[0, 1]`` (8-bit EM divided by 255, as U-Net); ``"percentile"``
    maps each image's ``lower``-``upper`` percentiles to ``[0, 1]`` and clips (robust to contrast changes between
    sections); ``"zscore"`` subtracts each image's mean and divides by its standard deviation.

    Args:
        mode: one of :data:`EM_NORMALISATIONS`.
        max_value: the largest raw value for ``"fixed"`` (255 for 8-bit, 65535 for 16-bit).
        lower: lower percentile for ``"percentile"``.
        upper: upper percentile for ``"percentile"``.
        dtype: output dtype.
    """

    backend = ScaleIntensityRange.backend

    def __init__(
        self,
        mode: str = "fixed",
        max_value: float = 255.0,
        lower: float = 1.0,
        upper: float = 99.0,
        dtype: DtypeLike = np.float32,
    ) -> None:
        if mode == "fixed":
            self.scaler: Transform = ScaleIntensityRange(0.0, max_value, 0.0, 1.0, clip=True, dtype=dtype)
        elif mode == "percentile":
            self.scaler = ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=True, dtype=dtype)
        elif mode == "zscore":
            self.scaler = NormalizeIntensity(dtype=dtype)
        else:
            raise ValueError(f"unknown EM normalisation {mode!r}; choose one of {EM_NORMALISATIONS}.")
        self.mode = mode

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return self.scaler(img)


class NormalizeEMd(MapTransform):
    """Dictionary version of :class:`NormalizeEM`.

    Args:
        keys: keys of the EM images.
        mode, max_value, lower, upper, dtype: see :class:`NormalizeEM`.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = NormalizeEM.backend

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "fixed",
        max_value: float = 255.0,
        lower: float = 1.0,
        upper: float = 99.0,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = NormalizeEM(mode, max_value, lower, upper, dtype)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d
