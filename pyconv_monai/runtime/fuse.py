# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Inference form of a PyConvU-Net: every "PyConv, batch norm, activation" unit as a few plain convolutions.

:func:`fuse_for_inference` replaces each :class:`~pyconv_monai.networks.blocks.pyconv.PyConvNormAct` of an
evaluation-mode network by a :class:`FusedPyConvNormAct`: the PyConv computed through a plan of
:mod:`pyconv_monai.networks.blocks.pyconv_fast` (``"reference"``, ``"ungrouped"``, ``"dense"``) with the fused weights
computed *once* (``"width"``: each unit's plan chosen by its channels, :func:`width_plan_mode`), the batch norm
folded into them (scale into the weights, shift into a bias), the parts' outputs put
into the reference channel order, then the activation. It is the same function as the reference up to float rounding,
and it is what the CPU runtimes receive: the fused weights are constants, so ``torch.onnx.export`` writes plain ``Conv``
nodes that ONNX Runtime and OpenVINO run with their fastest kernels. Inference only: the module has no batch norm left
to train and no link to the reference parameters.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from monai.networks.utils import replace_modules
from pyconv_monai.networks.blocks.pyconv import PyConv, PyConvNormAct
from pyconv_monai.networks.blocks.pyconv_fast import PYCONV_MODES, FastPyConv, pyconv_plan

__all__ = ["FUSE_MODES", "WIDTH_RULE", "FusedPyConvNormAct", "fuse_for_inference", "width_plan_mode"]

# every named plan (each part is a plain convolution), and "width": a plan per unit by its output channels
FUSE_MODES: tuple[str, ...] = PYCONV_MODES + ("width",)
# the "width" rule, (at most this many output channels, plan), first match; wider units keep the reference plan.
# Measured per unit on OpenVINO (benchmarks/runtime_profile.py --units, docs/performance.md): a dense convolution
# is cheapest for the 16-channel full-resolution units, one convolution per level for 32-64 channels, the grouped
# levels from 128 channels on
WIDTH_RULE: tuple[tuple[int, str], ...] = ((16, "dense"), (64, "ungrouped"))

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class FusedPyConvNormAct(nn.Module):
    """A ``PyConvNormAct`` unit (PyConv, batch norm, activation) as plain convolutions with the norm folded in.

    Args:
        unit: the evaluation-mode unit; its PyConv may be a reference ``PyConv`` or a ``FastPyConv``. It is not
            changed.
        mode: the plan of the PyConv (see :func:`pyconv_monai.networks.blocks.pyconv_fast.pyconv_plan`), one of
            :data:`FUSE_MODES`; ``"width"`` picks it from the unit's output channels (:func:`width_plan_mode`).

    Raises:
        ValueError: for a mode outside :data:`FUSE_MODES`, or a norm layer that is not a batch norm (or identity).
    """

    def __init__(self, unit: PyConvNormAct, mode: str = "dense") -> None:
        super().__init__()
        if mode not in FUSE_MODES:
            raise ValueError(f"cannot fuse PyConv mode {mode!r} into plain convolutions; choose one of {FUSE_MODES}.")
        conv = unit.conv.reference if isinstance(unit.conv, FastPyConv) else unit.conv
        if not isinstance(conv, PyConv):
            raise ValueError(f"expected a PyConv in the unit, got {type(unit.conv).__name__}.")
        norm = unit.norm
        if not isinstance(norm, (*_BATCH_NORMS, nn.Identity)):
            raise ValueError(f"only batch norm folds into a convolution, got {type(norm).__name__}.")
        out_channels = sum(conv.level_channels)
        self.mode = mode
        self.plan_mode = width_plan_mode(out_channels) if mode == "width" else mode
        fast = FastPyConv(conv, pyconv_plan(conv.kernel_sizes, conv.groups, self.plan_mode))
        with torch.no_grad():
            scale, shift = _norm_affine(norm, out_channels, conv.levels[0].weight)
            starts = [sum(conv.level_channels[:i]) for i in range(len(conv.level_channels))]
            conv_type = type(conv.levels[0])
            first = conv.levels[0]
            order: list[int] = []  # reference channel of each output channel, parts concatenated in plan order
            self.parts = nn.ModuleList()
            for index, part in enumerate(fast.plan):
                weight, bias = fast.part_weight(index)
                # output channel k of the part: group j, then the level's channels of that group, level by level
                final = []
                for j in range(part.groups):
                    for i in part.level_indices:
                        c = conv.level_channels[i] // part.groups
                        final += [starts[i] + j * c + t for t in range(c)]
                final_t = torch.as_tensor(final)
                if part.groups == 1:  # a dense part's rows can be put in reference order: no permutation later
                    sort = torch.argsort(final_t)
                    weight, final_t = weight[sort], final_t[sort]
                    bias = None if bias is None else bias[sort]
                bias = torch.zeros_like(final_t, dtype=weight.dtype) if bias is None else bias
                layer = conv_type(
                    first.in_channels,
                    weight.shape[0],
                    kernel_size=part.kernel_size,
                    stride=first.stride,
                    padding=part.kernel_size // 2,
                    groups=part.groups,
                    bias=True,
                )
                s = scale[final_t]
                layer.weight.copy_(weight * s.reshape(-1, *([1] * (weight.dim() - 1))))
                layer.bias.copy_(bias * s + shift[final_t])
                self.parts.append(layer)
                order += final_t.tolist()
        perm = torch.argsort(torch.as_tensor(order))  # output channel c of the unit = concatenated channel perm[c]
        self.permute = not torch.equal(perm, torch.arange(len(order)))
        self.register_buffer("perm", perm, persistent=False)
        self.act = copy.deepcopy(unit.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [part(x) for part in self.parts]
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)
        if self.permute:
            y = y.index_select(1, self.perm)
        return self.act(y)


def width_plan_mode(channels: int) -> str:
    """The plan of a unit with ``channels`` output channels under the ``"width"`` fusion (:data:`WIDTH_RULE`).

    Args:
        channels: the unit's output channels (all pyramid levels).

    Returns:
        ``"dense"``, ``"ungrouped"`` or ``"reference"``.
    """
    return next((mode for limit, mode in WIDTH_RULE if channels <= limit), "reference")


def _norm_affine(norm: nn.Module, channels: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` of an evaluation-mode batch norm (``y = x * scale + shift``)."""
    if isinstance(norm, nn.Identity):
        return torch.ones(channels, dtype=like.dtype), torch.zeros(channels, dtype=like.dtype)
    if norm.running_var is None:
        raise ValueError("batch norm without running statistics (track_running_stats=False) cannot be folded.")
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale.to(like.dtype), shift.to(like.dtype)


def fuse_for_inference(net: nn.Module, mode: str = "dense", inplace: bool = False) -> nn.Module:
    """The inference form of ``net``: each ``PyConvNormAct`` replaced by a :class:`FusedPyConvNormAct`.

    Args:
        net: a network with ``PyConvNormAct`` units (e.g. ``PyConvUNet``), with its trained weights. A network
            without them (e.g. U-Net) is returned as it is (copied unless ``inplace``).
        mode: the PyConv plan of every unit, one of :data:`FUSE_MODES` (``"width"``: per unit by its channels).
        inplace: change ``net`` instead of a copy.

    Returns:
        the network in evaluation mode, for inference only (same function, up to float rounding).
    """
    net = net if inplace else copy.deepcopy(net)
    net.eval()
    if isinstance(net, PyConvNormAct):
        return FusedPyConvNormAct(net, mode).eval()
    units = [(name, m) for name, m in net.named_modules() if isinstance(m, PyConvNormAct)]
    for name, unit in units:  # MONAI's swap by name; the fused unit is built on its unit's device
        replace_modules(net, name, FusedPyConvNormAct(unit, mode).eval(), match_device=False)
    return net
