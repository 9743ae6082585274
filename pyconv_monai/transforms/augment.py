# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The papers' training augmentations, built from MONAI's random dictionary transforms.

- PyConvU-Net (Li et al. 2021): random flips and 90/180 degree rotations.
- U-Net (Ronneberger et al. 2015): shifts and rotations, gray value variations, and smooth elastic deformations
  from random displacements on a coarse 3 x 3 grid (10 pixels standard deviation), interpolated bicubically.

The elastic deformation is :class:`RandElasticDeformd`, not MONAI's ``Rand2DElasticd``: that one upsamples the
absolute sampling grid with PyTorch's bicubic kernel, which does not reproduce a linear ramp, so even with zero
displacement it warps every image by the same pattern (up to 12 pixels at a 256-pixel control spacing, 3 at 64).
Interpolating only the displacements keeps zero displacement the identity; it is also about ten times faster.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandFlipd,
    RandomizableTransform,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, ensure_tuple, ensure_tuple_rep

__all__ = ["RandElasticDeformd", "pyconvunet_augmentation", "unet_augmentation"]


class RandElasticDeformd(RandomizableTransform, MapTransform):
    """U-Net's elastic deformation of 2D images, with an optional random shift and rotation, in one resampling.

    Displacements are drawn per control point of a coarse ``grid_size`` x ``grid_size`` grid spanning the image
    (corners included) from ``N(0, sigma^2)`` pixels, upsampled bicubically to every pixel, and added to a random
    rotation about the centre and shift. All keys get the same deformation; borders are mirrored. Zero displacement,
    shift and rotation give exactly the input. Training-time only: the transform is not recorded for inversion.

    Args:
        keys: keys of ``(C, H, W)`` images and labels.
        prob: probability of deforming.
        sigma: standard deviation of the control-point displacements in pixels (10 in U-Net).
        grid_size: control points per axis (3 in U-Net).
        max_shift: largest shift in pixels, uniform per axis.
        max_rotation: largest rotation in radians, uniform.
        mode: ``"bilinear"`` or ``"nearest"`` (labels), one or one per key.
        padding_mode: ``grid_sample`` padding, ``"reflection"`` (mirror, as U-Net), ``"border"`` or ``"zeros"``.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        sigma: float = 10.0,
        grid_size: int = 3,
        max_shift: float = 0.0,
        max_rotation: float = 0.0,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str = "reflection",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if grid_size < 2:
            raise ValueError(f"grid_size must be at least 2, got {grid_size}.")
        self.sigma, self.grid_size, self.max_shift, self.max_rotation = sigma, grid_size, max_shift, max_rotation
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = padding_mode
        self.displacement = torch.zeros(2, grid_size, grid_size)
        self.shift = (0.0, 0.0)
        self.angle = 0.0
        self._bases: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        g = self.grid_size
        self.displacement = torch.as_tensor(self.R.normal(0.0, self.sigma, size=(2, g, g)), dtype=torch.float32)
        self.shift = tuple(float(v) for v in self.R.uniform(-self.max_shift, self.max_shift, size=2))
        self.angle = float(self.R.uniform(-self.max_rotation, self.max_rotation))

    def _basis(self, height: int, width: int, device: torch.device | None) -> tuple[torch.Tensor, ...]:
        """Centred pixel coordinates and the bicubic interpolation matrices of one image size (cached)."""
        key = (height, width, str(device))
        if key not in self._bases:
            g = self.grid_size
            eye = torch.eye(g, dtype=torch.float32, device=device)
            # bicubic upsampling is separable: upsampling the identity gives each axis' interpolation matrix
            w_rows = F.interpolate(eye[None, None], size=(height, g), mode="bicubic", align_corners=True)[0, 0]
            w_cols = F.interpolate(eye[None, None], size=(width, g), mode="bicubic", align_corners=True)[0, 0]
            rows = torch.arange(height, dtype=torch.float32, device=device)[:, None] - (height - 1) / 2.0
            cols = torch.arange(width, dtype=torch.float32, device=device)[None, :] - (width - 1) / 2.0
            self._bases[key] = (rows, cols, w_rows, w_cols)
        return self._bases[key]

    def sampling_grid(self, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
        """The ``grid_sample`` grid ``(1, H, W, 2)`` (``align_corners=True``) of the current random parameters."""
        rows, cols, w_rows, w_cols = self._basis(height, width, device)
        disp = self.displacement.to(device)
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        grid = torch.empty((1, height, width, 2), dtype=torch.float32, device=device)
        # source position of every output pixel: rotation about the centre + shift + interpolated displacement,
        # normalised to [-1, 1] over the pixel centres; grid_sample takes (x, y) = (column, row)
        scale_r, scale_c = 2.0 / max(height - 1, 1), 2.0 / max(width - 1, 1)
        grid[0, ..., 1] = (cos * rows - sin * cols + self.shift[0] + w_rows @ disp[0] @ w_cols.T) * scale_r
        grid[0, ..., 0] = (sin * rows + cos * cols + self.shift[1] + w_rows @ disp[1] @ w_cols.T) * scale_c
        return grid

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        first = next(self.key_iterator(d), None)
        self.randomize(None)
        if first is None or not self._do_transform:
            return d
        if d[first].ndim != 3:
            raise ValueError(f"RandElasticDeformd expects (C, H, W) images, got shape {tuple(d[first].shape)}.")
        height, width = d[first].shape[1:]
        device = d[first].device if isinstance(d[first], torch.Tensor) else None
        grid = self.sampling_grid(int(height), int(width), device)
        for key, mode in self.key_iterator(d, self.mode):
            img = d[key]
            if tuple(img.shape[1:]) != (height, width):
                raise ValueError(f"item[{key!r}] has shape {tuple(img.shape)}; all keys need ({height}, {width}).")
            x = convert_to_tensor(img, track_meta=False)
            out = F.grid_sample(x[None].float(), grid, mode=mode, padding_mode=self.padding_mode, align_corners=True)[0]
            d[key] = convert_to_dst_type(out, img, dtype=img.dtype)[0]
        return d


def pyconvunet_augmentation(keys: KeysCollection = ("image", "label"), prob: float = 0.5, max_k: int = 2) -> Compose:
    """Random vertical and horizontal flips and 90/180 degree rotations, the same for every key.

    Args:
        keys: keys of the 2D ``(C, H, W)`` images and labels (and weight maps) to transform together.
        prob: probability of each flip and of a rotation.
        max_k: rotations by ``k * 90`` degrees with ``k`` in ``1..max_k`` (2: 90 and 180 degrees, as the paper;
            3 adds 270). A 90 degree rotation swaps ``H`` and ``W`` of non-square images.

    Returns:
        a ``Compose`` of ``RandFlipd`` (axis 0), ``RandFlipd`` (axis 1) and ``RandRotate90d``.
    """
    return Compose(
        [
            RandFlipd(keys, prob=prob, spatial_axis=0),
            RandFlipd(keys, prob=prob, spatial_axis=1),
            RandRotate90d(keys, prob=prob, max_k=max_k, spatial_axes=(0, 1)),
        ]
    )


def unet_augmentation(
    keys: KeysCollection = ("image", "label"),
    image_keys: KeysCollection = ("image",),
    prob: float = 0.5,
    max_shift: float = 20.0,
    max_rotation: float = math.pi,
    elastic_sigma: float = 10.0,
    grid_size: int = 3,
    intensity_shift: float = 0.1,
    intensity_scale: float = 0.1,
    gamma: tuple[float, float] | None = (0.8, 1.25),
) -> Compose:
    """U-Net augmentation: one random shift/rotation/elastic deformation for all keys, then gray value changes.

    Args:
        keys: keys of the 2D ``(C, H, W)`` images and labels to deform together; ``image_keys`` are interpolated
            bilinearly, the others (labels) by nearest neighbour; borders are mirrored, as in U-Net.
        image_keys: keys that also get the gray value changes.
        prob: probability of the spatial transform and of each gray value change.
        max_shift: largest shift in pixels (uniform in ``[-max_shift, max_shift]`` per axis).
        max_rotation: largest rotation in radians (``pi``: any angle, as EM; 0 disables).
        elastic_sigma: standard deviation of the control-point displacements in pixels (10 in the paper).
        grid_size: control points per axis (3 in the paper).
        intensity_shift: largest offset added to the image (``RandShiftIntensityd``; intensities in ``[0, 1]``).
        intensity_scale: largest relative scaling (``RandScaleIntensityd``).
        gamma: range of the random gamma (``RandAdjustContrastd``), ``None`` to skip.

    Returns:
        a ``Compose`` of :class:`RandElasticDeformd` and MONAI's gray value transforms.
    """
    keys = ensure_tuple(keys)
    image_keys = ensure_tuple(image_keys)
    missing = [k for k in image_keys if k not in keys]
    if missing:
        raise ValueError(f"image_keys {missing} are not in keys {keys}.")
    modes = tuple("bilinear" if k in image_keys else "nearest" for k in keys)
    transforms = [
        RandElasticDeformd(
            keys,
            prob=prob,
            sigma=elastic_sigma,
            grid_size=grid_size,
            max_shift=max_shift,
            max_rotation=max_rotation,
            mode=modes,
            padding_mode="reflection",
        ),
        RandShiftIntensityd(image_keys, offsets=intensity_shift, prob=prob),
        RandScaleIntensityd(image_keys, factors=intensity_scale, prob=prob),
    ]
    if gamma is not None:
        transforms.append(RandAdjustContrastd(image_keys, gamma=gamma, prob=prob))
    return Compose(transforms)
