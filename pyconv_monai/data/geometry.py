# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Do two images share one voxel grid in the world? Checked on their affines, not only their shapes."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys

__all__ = ["geometry_mismatch", "take_slice"]


def _affine(img: torch.Tensor | np.ndarray) -> np.ndarray:
    affine = img.affine if isinstance(img, MetaTensor) else torch.eye(4)
    return np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, float)


def geometry_mismatch(img: torch.Tensor, ref: torch.Tensor, tol: float = 0.05) -> str | None:
    """Describe how ``img`` and ``ref`` (channel-first) fail to share a voxel grid, or return ``None`` when they do.

    The grids match when the spatial shapes are equal and every corner voxel lies at the same world position,
    within ``tol`` of the smallest voxel size (so float32 headers and DS rounding pass, a shift by a voxel does not).

    Args:
        img: channel-first image (MetaTensor for an affine; plain tensors have the identity).
        ref: channel-first reference image.
        tol: tolerance as a fraction of the smallest voxel size of ``ref``.
    """
    shape, ref_shape = tuple(img.shape[1:]), tuple(ref.shape[1:])
    if shape != ref_shape:
        return f"spatial shape {shape} differs from {ref_shape}"
    a, b = _as_4x4(_affine(img)), _as_4x4(_affine(ref))
    corners = np.array(list(itertools.product(*[(0, max(s - 1, 0)) for s in shape[:3]])), float)
    corners = np.concatenate([corners, np.zeros((len(corners), 3 - corners.shape[1])), np.ones((len(corners), 1))], 1)
    offset = np.linalg.norm(corners @ a.T - corners @ b.T, axis=1).max()
    voxel = np.sqrt((b[:3, : min(len(shape), 3)] ** 2).sum(axis=0)).min()
    if offset > tol * voxel:
        return (
            f"the voxel grids are {offset:.3g} mm apart at a corner (voxel size {voxel:.3g} mm): different "
            "position, orientation or spacing"
        )
    return None


def _as_4x4(affine: np.ndarray) -> np.ndarray:
    """A 2D (3x3) affine embedded in 3D; 4x4 affines unchanged."""
    if affine.shape == (4, 4):
        return affine
    out = np.eye(4)
    out[:2, :2], out[:2, 3] = affine[:2, :2], affine[:2, 2]
    return out


def take_slice(vol: torch.Tensor, index: int, position: int | None = None) -> torch.Tensor:
    """Slice ``index`` of the last axis of a channel-first volume ``(C, H, W, N)`` as a fresh ``(C, H, W)`` tensor.

    A MetaTensor slice keeps the volume's 4x4 affine moved to the slice, so it still maps pixels to the world, and
    its meta gets ``"slice"``; the volume's applied operations are not carried over (they act on 3D).

    Args:
        vol: the volume.
        index: index into its last axis.
        position: the slice's index in the volume the affine belongs to, where ``vol`` is already a sub-volume of it
            (e.g. a ``(C, H, W, 1)`` patch); defaults to ``index``.
    """
    if not isinstance(vol, MetaTensor):
        return vol[..., index].clone()
    position = index if position is None else position
    affine = vol.affine.clone()
    affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * position
    meta = {k: v for k, v in vol.meta.items() if k not in (MetaKeys.AFFINE, MetaKeys.SPATIAL_SHAPE)}
    meta.update({"slice": int(position), MetaKeys.SPATIAL_SHAPE: np.asarray(vol.shape[1:3])})
    return MetaTensor(vol.as_tensor()[..., index].clone(), affine=affine, meta=meta)
