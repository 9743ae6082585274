# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Fast implementations of :class:`PyConv`: the same function of the same parameters, in fewer, larger launches.

A reference ``PyConv`` runs one convolution per pyramid level (kernels 3/5/7/9 with 1/4/8/16 groups) and
concatenates the outputs; grouped large-kernel convolutions are slow per multiply-add. :class:`FastPyConv` computes
the same outputs through a *plan*, a few :class:`PyConvPart`, each one convolution covering several levels with a
common kernel size and number of groups: each level's kernel is zero-padded to that size and its groups are
expanded block-diagonally (exact: the added weights are zeros).

Only the plans that won a measurement somewhere are named (docs/performance.md): ``"ungrouped"`` (fastest GPU
inference, H200; 2x the reference's CPU training step) and ``"dense"`` (fastest CPU training step and CPU torch
inference). The ``grouped``, ``split`` and ``depthwise`` plans and the Triton kernels were measured and never won:
they were removed.

The fused weights are built from the reference parameters at every call, so gradients reach them and the
``state_dict`` keeps the reference layout (``levels.<i>.weight``): weights saved from either load into the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from pyconv_monai.networks.blocks.pyconv import PyConv

__all__ = ["PYCONV_MODES", "FastPyConv", "PyConvPart", "pyconv_plan", "plan_macs", "expand_groups", "pad_kernel"]

# named plans; "reference" is the reference module itself (one convolution per level)
PYCONV_MODES: tuple[str, ...] = ("reference", "ungrouped", "dense")

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class PyConvPart:
    """One launch of a :class:`FastPyConv`: some pyramid levels computed together by one convolution with ``groups``
    groups and a ``kernel_size`` kernel (each level's kernel zero-padded, its groups expanded block-diagonally).

    Attributes:
        level_indices: indices of the reference levels (``PyConv.levels``) it computes.
        groups: number of groups; it must divide every level's groups.
        kernel_size: kernel size of the part, odd and at least every level's kernel size.
    """

    level_indices: tuple[int, ...]
    groups: int = 1
    kernel_size: int = 3


def pyconv_plan(kernel_sizes: Sequence[int], groups: Sequence[int], mode: str) -> tuple[PyConvPart, ...]:
    """The parts of a named plan for a pyramid with these levels.

    Modes:

    * ``"reference"``: one part per level, as the reference (the CPU runtimes' export, and its MACs);
    * ``"ungrouped"``: one dense convolution per level (groups expanded block-diagonally, kernels kept);
    * ``"dense"``: one dense convolution for the whole pyramid (largest kernel, one group).

    Args:
        kernel_sizes: kernel size of each level.
        groups: number of groups of each level.
        mode: one of :data:`PYCONV_MODES`.

    Returns:
        the parts; together they cover every level once.

    Raises:
        ValueError: for an unknown mode.
    """
    kernel_sizes, groups = tuple(kernel_sizes), tuple(groups)
    n = len(kernel_sizes)

    def conv(indices: Sequence[int], g: int | None = None) -> PyConvPart:
        indices = tuple(indices)
        g = math.gcd(*(groups[i] for i in indices)) if g is None else g
        return PyConvPart(indices, g, max(kernel_sizes[i] for i in indices))

    if mode == "reference":
        return tuple(conv([i]) for i in range(n))
    if mode == "ungrouped":
        return tuple(conv([i], 1) for i in range(n))
    if mode == "dense":
        return (conv(range(n), 1),)
    raise ValueError(f"unknown PyConv mode {mode!r}; choose one of {', '.join(PYCONV_MODES)}.")


def plan_macs(
    in_channels: int,
    level_channels: Sequence[int],
    groups: Sequence[int],
    plan: Sequence[PyConvPart],
    spatial_dims: int = 2,
) -> int:
    """Multiply-accumulates per output voxel of a plan (zeros of padded or block-diagonal weights included).

    Args:
        in_channels: input channels of the pyramid.
        level_channels: output channels of each level.
        groups: groups of each level.
        plan: the parts, e.g. from :func:`pyconv_plan`.
        spatial_dims: number of spatial dimensions.

    Returns:
        the MACs of all parts for one output position.
    """
    total = 0
    for part in plan:
        taps = part.kernel_size**spatial_dims
        total += sum(level_channels[i] for i in part.level_indices) * (in_channels // part.groups) * taps
    return total


def expand_groups(weight: torch.Tensor, groups: int, new_groups: int) -> torch.Tensor:
    """Express a grouped convolution's weight with fewer groups, as a block-diagonal weight.

    Args:
        weight: ``(out_channels, in_channels // groups, *kernel)``.
        groups: its number of groups.
        new_groups: the number of groups wanted; it must divide ``groups``.

    Returns:
        ``(out_channels, in_channels // new_groups, *kernel)``; output channel ``o`` keeps its weights on the
        input channels of its original group and is zero elsewhere. Differentiable.

    Raises:
        ValueError: when ``new_groups`` does not divide ``groups``.
    """
    if groups % new_groups != 0:
        raise ValueError(f"cannot express {groups} groups with {new_groups} groups: it must divide {groups}.")
    r = groups // new_groups
    if r == 1:
        return weight
    d = weight.dim() - 2
    # out channel o = (J * r + s) * m + t: super-group J, sub-group s, channel t; it reads input s * cin_g + i of J
    w = weight.unflatten(0, (new_groups, r, -1)).movedim(1, -1)  # (G, m, cin_g, *k, s)
    w = torch.diag_embed(w)  # (G, m, cin_g, *k, s, s'): zero unless s == s'
    w = w.permute(0, 3 + d, 1, 4 + d, 2, *range(3, 3 + d))  # (G, s, m, s', cin_g, *k)
    return w.flatten(0, 2).flatten(1, 2)


def pad_kernel(weight: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad a convolution kernel by ``pad`` on every side of every spatial dimension ("same" outputs unchanged).

    Args:
        weight: ``(out_channels, in_channels_per_group, *kernel)``.
        pad: number of zeros added before and after the kernel in each spatial dimension.

    Returns:
        ``(out_channels, in_channels_per_group, *[k + 2 * pad for k in kernel])``. Differentiable.
    """
    return F.pad(weight, [pad] * 2 * (weight.dim() - 2)) if pad > 0 else weight


class FastPyConv(nn.Module):
    """A :class:`PyConv` computed through a plan of fused launches; same function, same parameters.

    It holds the reference module's ``levels`` (the very same ``nn.ModuleList``), so its parameters are the
    reference parameters, its ``state_dict`` has the reference keys, and optimizers, ``load_state_dict`` and
    checkpoints see no difference. Fused weights are built from the levels' weights at every call (a few small
    kernels), so gradients reach the reference parameters and weight updates are always seen.

    ``torch.jit.trace`` records the fast path; ``torch.jit.script`` (e.g. ``monai.bundle ckpt_export``) scripts the
    reference module instead (:meth:`__prepare_scriptable__`): the same function of the same parameters.

    Args:
        conv: the reference ``PyConv`` (or a ``FastPyConv``, whose reference is taken); it is kept, not copied,
            and returned by :attr:`reference`.
        mode: a name from :data:`PYCONV_MODES` other than ``"reference"``, or the parts of a custom plan.

    Raises:
        TypeError: when ``conv`` is not a ``PyConv``.
        ValueError: for an unknown mode, or a plan that does not cover each level exactly once or whose groups
            or kernel sizes cannot hold its levels.

    Example::

        fast = FastPyConv(PyConv(2, 32, 64), "dense")  # one 9x9 convolution instead of four
    """

    def __init__(self, conv: PyConv, mode: str | Sequence[PyConvPart] = "dense") -> None:
        super().__init__()
        if isinstance(conv, FastPyConv):
            conv = conv.reference
        if not isinstance(conv, PyConv):
            raise TypeError(f"FastPyConv needs a PyConv, got {type(conv).__name__}.")
        if isinstance(mode, str):
            if mode == "reference":
                raise ValueError("mode 'reference' is the PyConv itself; use FastPyConv only for fast modes.")
            plan = pyconv_plan(conv.kernel_sizes, conv.groups, mode)
        else:
            plan, mode = tuple(mode), "custom"
        self.levels = conv.levels  # shared: the reference parameters and state_dict keys
        self.__dict__["_reference"] = conv  # not registered: no second copy of the keys
        self.mode = mode
        self.spatial_dims = conv.spatial_dims
        self.kernel_sizes = conv.kernel_sizes
        self.groups = conv.groups
        self.level_channels = conv.level_channels
        first = conv.levels[0]
        self.in_channels: int = first.in_channels
        self.stride: tuple[int, ...] = tuple(first.stride)
        self._check(plan)
        self.plan = plan
        # one dense convolution over the levels in order: its output is the result, no concatenation
        self._single = len(plan) == 1 and plan[0].groups == 1
        self._single = self._single and plan[0].level_indices == tuple(range(len(self.levels)))

    @property
    def reference(self) -> PyConv:
        """The reference module (sharing these parameters)."""
        return self.__dict__["_reference"]

    def __prepare_scriptable__(self) -> PyConv:
        """``torch.jit.script`` compiles the reference module in this one's place (same parameters, same function)."""
        return self.reference

    def _check(self, plan: Sequence[PyConvPart]) -> None:
        seen = sorted(i for part in plan for i in part.level_indices)
        if seen != list(range(len(self.kernel_sizes))):
            raise ValueError(f"a PyConv plan must cover each of its {len(self.kernel_sizes)} levels once, got {plan}.")
        for part in plan:
            for i in part.level_indices:
                k, g = self.kernel_sizes[i], self.groups[i]
                if part.kernel_size < k or (part.kernel_size - k) % 2:
                    raise ValueError(f"part {part} cannot hold level {i} (kernel {k}).")
                if part.groups < 1 or g % part.groups:
                    raise ValueError(f"part {part} cannot hold level {i} ({g} groups).")

    def extra_repr(self) -> str:
        parts = ", ".join(
            f"conv(level_indices={list(p.level_indices)}, groups={p.groups}, kernel={p.kernel_size})" for p in self.plan
        )
        return f"mode={self.mode!r}, plan=[{parts}]"

    def macs_per_voxel(self) -> int:
        """Multiply-accumulates per output voxel of this plan (see :func:`plan_macs`)."""
        return plan_macs(self.in_channels, self.level_channels, self.groups, self.plan, self.spatial_dims)

    def part_weight(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused weight and bias of part ``index``, built from the reference parameters (differentiable).

        The part's output channels are super-group major: for each of its ``groups`` groups, the channels of that
        group of each level in turn.
        """
        part = self.plan[index]
        weights, biases = [], []
        for i in part.level_indices:
            level = self.levels[i]
            pad = (part.kernel_size - self.kernel_sizes[i]) // 2
            w = pad_kernel(expand_groups(level.weight, self.groups[i], part.groups), pad)
            weights.append(w.unflatten(0, (part.groups, -1)))
            if level.bias is not None:
                biases.append(level.bias.unflatten(0, (part.groups, -1)))
        weight = weights[0] if len(weights) == 1 else torch.cat(weights, dim=1)
        bias = None if not biases else (biases[0] if len(biases) == 1 else torch.cat(biases, dim=1)).flatten()
        return weight.flatten(0, 1), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_fn = _CONV_FN[self.spatial_dims]
        pieces: list[list[torch.Tensor]] = [[] for _ in self.levels]  # views of the outputs, by reference level
        for index, part in enumerate(self.plan):
            weight, bias = self.part_weight(index)
            y = conv_fn(x, weight, bias, self.stride, part.kernel_size // 2, 1, part.groups)
            if self._single:
                return y
            y = y.unflatten(1, (part.groups, -1))  # (N, groups, channels of each level per group, ...)
            off = 0
            for i in part.level_indices:
                c = self.level_channels[i] // part.groups
                pieces[i].extend(y[:, j].narrow(1, off, c) for j in range(part.groups))
                off += c
        flat = [p for level in pieces for p in level]
        return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)
