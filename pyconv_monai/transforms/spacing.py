# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Resample the slices of a volume in-plane to the pixel spacing a 2D network was trained at, invertibly.

A 2D network sees one slice at a time, so only the in-plane spacing matters: the slice axis (the last one) is never
interpolated. The slices are resampled as the channels of one 2D image with MONAI's :class:`~monai.transforms.Spacing`
(so ``"bicubic"`` is available, which MONAI's 3D resampling lacks), and the inverse puts an output (probabilities,
logits) back on the input's exact grid with MONAI's :class:`~monai.transforms.SpatialResample`; MONAI's ``Invertd``
runs it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Spacing, SpatialResample
from monai.utils import TraceKeys, ensure_tuple_rep
from pyconv_monai.data.formats import GEOMETRY_KINDS, image_kind
from pyconv_monai.data.meta import tracking_meta

__all__ = ["InPlaneSpacingd", "in_plane_spacing"]

MAX_SLICE_PIXELS = 4096 * 4096  # a resampled slice larger than this is refused (memory)


def in_plane_spacing(affine: Any) -> tuple[float, float]:
    """The pixel spacing (mm) along the first two voxel axes of a 4x4 (or 3x3 for 2D) voxel-to-world affine."""
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=float)
    n = a.shape[0] - 1
    return float(np.linalg.norm(a[:n, 0])), float(np.linalg.norm(a[:n, 1]))


def _kind_of(path: str) -> str | None:
    """:func:`pyconv_monai.data.image_kind` of ``path``, ``None`` where it has none (not a file, unknown format)."""
    try:
        return image_kind(path) if path else None
    except (ValueError, OSError):
        return None


def _pair(value: Sequence[float] | float | None, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    p = [float(value)] * 2 if np.isscalar(value) else [float(v) for v in value]  # type: ignore[arg-type, union-attr]
    if len(p) != 2:
        raise ValueError(f"{name} must be one number or two (rows, columns), got {value!r}.")
    return p[0], p[1]


class InPlaneSpacingd(MapTransform, InvertibleTransform):
    """Resample ``(C, H, W, N)`` volumes or ``(C, H, W)`` slices in-plane (axes 1 and 2) to ``pixdim``; the slices
    (axis 3) are kept.

    The image's affine gives its spacing (orient it first, e.g. ``Orientationd``, so that axes 1 and 2 are in-plane).
    Slices whose spacing lies within ``[min_pixdim, max_pixdim]`` are passed through unchanged (MONAI
    ``Spacing``'s meaning of these arguments: the spacings the network handles as they are). ``inverse`` (MONAI's
    ``Invertd``) resamples an output on the resampled grid back to the input's shape and affine (bilinear for a
    bicubic forward step, so probabilities do not overshoot; nearest with ``Invertd``'s ``nearest_interp``).

    Returns (per key): the resampled image, a MetaTensor whose affine has the new spacing and the same directions
    and first pixel centre.

    Args:
        keys: keys of the images.
        pixdim: target in-plane spacing (rows, columns) in mm; a single number for both; ``None`` or non-positive
            values: pass through.
        mode: interpolation, ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` (``Spacing``'s ``mode``); one per key
            (e.g. ``["bicubic", "nearest"]`` for image and label) or one for all.
        padding_mode: ``Spacing``'s ``padding_mode``.
        min_pixdim: smallest spacing (rows, columns; or one number) kept as it is; ``None``: ``pixdim``.
        max_pixdim: largest spacing kept as it is; ``None``: ``pixdim``.
        max_anisotropy: largest ratio of the two spacings accepted (beyond it a ``ValueError`` names the file).
        geometry_only: pass through images whose file (meta ``filename_or_obj``) carries no spacing (TIFF, PNG and
            other 2D files: their affine is a placeholder), resampling only DICOM, NIfTI and NRRD.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        ValueError: (on call) an affine with no usable spacing (zero, non-finite), pixels more anisotropic than
            ``max_anisotropy``, or a resampled slice larger than 4096 x 4096 pixels.
    """

    def __init__(
        self,
        keys: KeysCollection,
        pixdim: Sequence[float] | float | None,
        mode: str = "bicubic",
        padding_mode: str = "border",
        min_pixdim: Sequence[float] | float | None = None,
        max_pixdim: Sequence[float] | float | None = None,
        max_anisotropy: float = 4.0,
        geometry_only: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        p = _pair(pixdim, "pixdim")
        self.pixdim = None if p is None or min(p) <= 0 else p
        self.min_pixdim = _pair(min_pixdim, "min_pixdim") or self.pixdim
        self.max_pixdim = _pair(max_pixdim, "max_pixdim") or self.pixdim
        self.mode = mode
        self.modes = ensure_tuple_rep(mode, len(self.keys))
        self.geometry_only = geometry_only
        self.padding_mode = padding_mode
        self.max_anisotropy = float(max_anisotropy)

    def _spacing(self, img: MetaTensor) -> tuple[float, float]:
        where = img.meta.get("filename_or_obj", "") if isinstance(img, MetaTensor) else ""
        where = f"{where}: " if where else ""
        if not isinstance(img, MetaTensor):
            raise ValueError(f"{where}the image carries no affine (not a MetaTensor), so its pixel spacing is unknown.")
        sx, sy = in_plane_spacing(img.affine)
        if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
            raise ValueError(
                f"{where}the header gives no usable pixel spacing ({sx:g} x {sy:g} mm); fix the file's spacing "
                "(NIfTI pixdim/sform, NRRD space directions, DICOM PixelSpacing)."
            )
        if max(sx, sy) / min(sx, sy) > self.max_anisotropy:
            raise ValueError(
                f"{where}pixels of {sx:g} x {sy:g} mm are more anisotropic than {self.max_anisotropy:g}:1; "
                "the in-plane resampling is not made for such slices (resample the volume first)."
            )
        return sx, sy

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mode in self.key_iterator(d, self.modes):
            img = d[key]
            flat = img.ndim == 3
            out = self._forward(img.unsqueeze(-1) if flat else img, mode)
            d[key] = out.squeeze(-1) if flat else out
        return d

    def _forward(self, img: MetaTensor, mode: str) -> MetaTensor:
        with tracking_meta():
            c, h, w, n = img.shape
            source = str(img.meta.get("filename_or_obj", "")) if isinstance(img, MetaTensor) else ""
            if self.pixdim is None or (self.geometry_only and _kind_of(source) not in GEOMETRY_KINDS):
                sx, sy = in_plane_spacing(img.affine) if isinstance(img, MetaTensor) else (1.0, 1.0)
                same = True
            else:
                sx, sy = self._spacing(img)
                lo, hi = self.min_pixdim or self.pixdim, self.max_pixdim or self.pixdim
                eps = 1e-6
                same = all(lo[i] * (1 - eps) <= v <= hi[i] * (1 + eps) for i, v in enumerate((sx, sy)))
            affine = img.affine.to(torch.float64)
            new2 = torch.diag(torch.tensor([sx, sy, 1.0], dtype=torch.float64))
            if same:
                out = img.clone()
            else:
                assert self.pixdim is not None
                size = (h * sx / self.pixdim[0]) * (w * sy / self.pixdim[1])
                if size > MAX_SLICE_PIXELS:
                    where = img.meta.get("filename_or_obj", "image")
                    raise ValueError(
                        f"{where}: {h} x {w} slices at {sx:g} x {sy:g} mm would become about {size ** 0.5:.0f}^2 "
                        f"pixels at {self.pixdim[0]:g} x {self.pixdim[1]:g} mm; refused (memory)."
                    )
                flat = MetaTensor(img.as_tensor().permute(0, 3, 1, 2).reshape(c * n, h, w), affine=new2.clone())
                res = Spacing(pixdim=self.pixdim, mode=mode, padding_mode=self.padding_mode, dtype=torch.float32)(
                    flat.float()
                )
                new2 = res.affine.to(torch.float64)
                h2, w2 = res.shape[1:]
                data = res.as_tensor().reshape(c, n, h2, w2).permute(0, 2, 3, 1).contiguous().to(img.dtype)
                out = MetaTensor(data, meta=dict(img.meta), applied_operations=list(img.applied_operations))
                u0, u1 = affine[:3, 0] / sx, affine[:3, 1] / sy
                new = affine.clone()
                new[:3, 0] = u0 * new2[0, 0]
                new[:3, 1] = u1 * new2[1, 1]
                new[:3, 3] = affine[:3, 3] + u0 * new2[0, 2] + u1 * new2[1, 2]
                out.affine = new
            info = {"orig_affine": affine, "src_affine_2d": new2, "orig_spacing": (sx, sy), "mode": mode}
            info["resampled"] = not same
            self.push_transform(out, orig_size=(h, w), extra_info=info)
            return out

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            flat = img.ndim == 3
            out = self._inverse(img.unsqueeze(-1) if flat else img)
            d[key] = out.squeeze(-1) if flat else out
        return d

    def _inverse(self, img: MetaTensor) -> MetaTensor:
        with tracking_meta():
            op = self.pop_transform(img)
            info = op[TraceKeys.EXTRA_INFO]
            h, w = (int(v) for v in op[TraceKeys.ORIG_SIZE])
            c, h2, w2, n = img.shape
            if not info["resampled"]:
                out = MetaTensor(img.as_tensor(), meta=dict(img.meta), applied_operations=img.applied_operations)
                out.affine = info["orig_affine"]
                return out
            sx, sy = info["orig_spacing"]
            mode = info.get("mode", self.mode)
            mode = "bilinear" if mode == "bicubic" else mode  # an output (probabilities): no overshoot
            flat = MetaTensor(
                img.as_tensor().permute(0, 3, 1, 2).reshape(c * n, h2, w2).float(), affine=info["src_affine_2d"]
            )
            dst = torch.diag(torch.tensor([sx, sy, 1.0], dtype=torch.float64))
            res = SpatialResample(mode=mode, padding_mode=self.padding_mode, dtype=torch.float32)(
                flat, dst_affine=dst, spatial_size=(h, w)
            )
            data = res.as_tensor().reshape(c, n, h, w).permute(0, 2, 3, 1).contiguous().to(img.dtype)
            out = MetaTensor(data, meta=dict(img.meta), applied_operations=img.applied_operations)
            out.affine = info["orig_affine"]
            return out
