# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The U-Net border weight map (Ronneberger et al. 2015, eq. 2) that makes the loss learn the thin gaps between
touching objects: ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, ensure_tuple
from scipy import ndimage

__all__ = ["BorderWeightMap", "BorderWeightMapd", "border_weight_map"]


def _class_weights(label: np.ndarray, class_weights: str | Sequence[float] | None) -> np.ndarray:
    """``w_c``: per-pixel class-balancing weights."""
    if class_weights is None:
        return np.ones(label.shape, np.float32)
    values, inverse, counts = np.unique(label, return_inverse=True, return_counts=True)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced', a sequence or None, got {class_weights!r}.")
        # sklearn's "balanced": n_pixels / (n_classes * n_pixels_of_class); the mean weight over the image is 1
        per_value = label.size / (len(values) * counts)
    else:
        weights = np.asarray(class_weights, float)
        if values.min() < 0 or values.max() >= len(weights):
            raise ValueError(f"class_weights has {len(weights)} entries but the label holds values {values.tolist()}.")
        per_value = weights[values.astype(int)]
    return per_value[inverse].reshape(label.shape).astype(np.float32)


def border_weight_map(
    label: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] | None = "balanced",
    background: int = 0,
    connectivity: int = 1,
    eps: float = 1e-4,
) -> np.ndarray:
    """Compute the U-Net weight map of a 2D (or 3D) label.

    Objects are the connected components of ``label != background`` (cells, in EM). For every background pixel,
    ``d1`` and ``d2`` are the distances to the nearest and second-nearest object; the border term
    ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` is added there (it is largest in narrow gaps between two objects) and
    is zero inside objects and where fewer than two objects exist. Distances are computed per object within the
    radius beyond which the term falls below ``eps``, so the cost grows with the number of objects, not the image
    area squared.

    Args:
        label: integer or binary label ``(H, W)`` (or ``(D, H, W)``).
        w0: weight of the border term (10 in the paper).
        sigma: its width in pixels (about 5 in the paper).
        class_weights: ``w_c``: ``"balanced"`` (inverse class frequency in this image, mean 1), a weight per label
            value, or ``None`` for 1 everywhere.
        background: label value of the background (membranes in ISBI after binarisation: 0).
        connectivity: neighbourhood of connected components (1: edges, 2: edges and corners in 2D).
        eps: border terms below ``eps`` are dropped.

    Returns:
        the float32 weight map, the shape of ``label``.
    """
    label = np.asarray(label)
    weights = _class_weights(label, class_weights)
    foreground = label != background
    objects, n = ndimage.label(foreground, structure=ndimage.generate_binary_structure(label.ndim, connectivity))
    if n < 2 or w0 == 0:
        return weights
    radius = sigma * math.sqrt(2.0 * math.log(max(w0 / eps, 1.0 + 1e-9)))
    r = int(math.ceil(radius))
    d1 = np.full(label.shape, np.inf, np.float32)
    d2 = np.full(label.shape, np.inf, np.float32)
    for i, box in enumerate(ndimage.find_objects(objects), start=1):
        if box is None:
            continue
        window = tuple(slice(max(s.start - r, 0), min(s.stop + r, size)) for s, size in zip(box, label.shape))
        dist = ndimage.distance_transform_edt(objects[window] != i).astype(np.float32)
        dist[dist > radius] = np.inf
        near, second = d1[window], d2[window]
        second[...] = np.minimum(second, np.maximum(near, dist))
        near[...] = np.minimum(near, dist)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
    border[foreground] = 0.0
    return (weights + border).astype(np.float32)


class BorderWeightMap(Transform):
    """Array version: the U-Net weight map of a channel-first label ``(1, H, W)`` (see :func:`border_weight_map`).

    Args:
        w0, sigma, class_weights, background, connectivity: see :func:`border_weight_map`.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(
        self,
        w0: float = 10.0,
        sigma: float = 5.0,
        class_weights: str | Sequence[float] | None = "balanced",
        background: int = 0,
        connectivity: int = 1,
    ) -> None:
        self.kwargs = dict(w0=w0, sigma=sigma, class_weights=class_weights, background=background)
        self.kwargs["connectivity"] = connectivity

    def __call__(self, label: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            label: channel-first label with one channel.

        Returns:
            the weight map, same type (MetaTensor meta copied), shape ``(1, *spatial)``, float32.
        """
        if label.shape[0] != 1:
            raise ValueError(f"expected a label with one channel, got shape {tuple(label.shape)}.")
        array = convert_to_numpy(label)[0]
        weights = border_weight_map(np.rint(array).astype(np.int64), **self.kwargs)[None]
        return convert_to_dst_type(weights, label, dtype=torch.float32 if isinstance(label, torch.Tensor) else None)[0]


class BorderWeightMapd(MapTransform):
    """Dictionary version of :class:`BorderWeightMap`: adds the weight map of each label under ``weight_keys``.

    Compute it after spatial augmentation, on the label the network sees. Feed it to
    :class:`pyconv_monai.losses.WeightedCrossEntropyLoss`.

    Args:
        keys: keys of the labels.
        weight_keys: keys for the weight maps, one per label key (default ``"weight"``).
        w0, sigma, class_weights, background, connectivity: see :func:`border_weight_map`.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = BorderWeightMap.backend

    def __init__(
        self,
        keys: KeysCollection = "label",
        weight_keys: KeysCollection = "weight",
        w0: float = 10.0,
        sigma: float = 5.0,
        class_weights: str | Sequence[float] | None = "balanced",
        background: int = 0,
        connectivity: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.weight_keys = ensure_tuple(weight_keys)
        if len(self.weight_keys) != len(self.keys):
            raise ValueError(f"give one weight key per label key, got {self.weight_keys} for {self.keys}.")
        self.weight_map = BorderWeightMap(w0, sigma, class_weights, background, connectivity)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, weight_key in self.key_iterator(d, self.weight_keys):
            d[weight_key] = self.weight_map(d[key])
        return d
