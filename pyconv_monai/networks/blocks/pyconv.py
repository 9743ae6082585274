# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Pyramidal convolution (PyConv, Duta et al. 2020), ``spatial_dims``-generic, built from MONAI's layer factories."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer

__all__ = ["PyConv", "PyConvNormAct", "TwoPyConv", "pyconv_level_channels", "DEFAULT_KERNELS", "DEFAULT_GROUPS"]

DEFAULT_KERNELS: tuple[int, ...] = (3, 5, 7, 9)
DEFAULT_GROUPS: tuple[int, ...] = (1, 4, 8, 16)

# share of the output channels of each level, by number of levels: as in the PyConvU-Net authors' code, the
# largest (most grouped) kernel gets the largest share, so that 16 groups divide a 32-channel stage
_DEFAULT_SPLITS: dict[int, tuple[int, ...]] = {1: (1,), 2: (1, 1), 3: (1, 1, 2), 4: (1, 1, 2, 4)}


def pyconv_level_channels(out_channels: int, splits: Sequence[int]) -> list[int]:
    """Split ``out_channels`` across pyramid levels in proportion to ``splits``.

    Args:
        out_channels: total number of output channels of the pyramid.
        splits: relative share of each level, e.g. ``(1, 1, 2)``.

    Returns:
        the number of output channels of each level, summing to ``out_channels``.

    Raises:
        ValueError: when ``out_channels`` cannot be split exactly in these proportions.
    """
    total = sum(splits)
    if any(s <= 0 for s in splits) or out_channels % total != 0:
        raise ValueError(
            f"PyConv cannot split {out_channels} output channels across {len(splits)} levels in the "
            f"proportions {tuple(splits)}: out_channels must be a positive multiple of {total}."
        )
    return [out_channels // total * s for s in splits]


class PyConv(nn.Module):
    """Pyramidal convolution: parallel convolutions with growing kernels and groups, outputs concatenated.

    Level ``i`` convolves the whole input with a ``kernel_sizes[i]`` kernel in ``groups[i]`` groups and produces
    a share of the output channels; "same" padding keeps the spatial size (for stride 1). The level convolutions are
    the ``nn.ModuleList`` :attr:`levels` (state-dict keys ``levels.<i>.weight``, as in the shipped weights).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels, split across the levels.
        kernel_sizes: kernel size of each level; its length is the number of levels.
        groups: number of groups of each level (same length as ``kernel_sizes``).
        splits: relative share of the output channels per level; default ``(1, 1, 2, 4)`` for 4 levels,
            ``(1, 1, 2)`` for 3, ``(1, 1)`` for 2.
        strides: convolution stride (the same for every level).
        bias: whether the convolutions have a bias (False when a norm layer follows).

    Raises:
        ValueError: at construction, when a level's groups do not divide its input or output channels, or
            when the lengths of ``kernel_sizes``, ``groups`` and ``splits`` differ.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = DEFAULT_KERNELS,
        groups: Sequence[int] = DEFAULT_GROUPS,
        splits: Sequence[int] | None = None,
        strides: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        kernel_sizes, groups = tuple(kernel_sizes), tuple(groups)
        if len(kernel_sizes) == 0 or len(kernel_sizes) != len(groups):
            raise ValueError(
                f"PyConv needs one group count per kernel size, got kernel_sizes={kernel_sizes} and groups={groups}."
            )
        if splits is None:
            if len(kernel_sizes) not in _DEFAULT_SPLITS:
                raise ValueError(f"PyConv has no default channel split for {len(kernel_sizes)} levels; pass `splits`.")
            splits = _DEFAULT_SPLITS[len(kernel_sizes)]
        if len(splits) != len(kernel_sizes):
            raise ValueError(f"PyConv got {len(splits)} splits for {len(kernel_sizes)} levels.")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"PyConv kernel sizes must be odd for 'same' padding, got {kernel_sizes}.")
        level_out = pyconv_level_channels(out_channels, splits)
        for k, g, c in zip(kernel_sizes, groups, level_out):
            if g < 1 or in_channels % g != 0 or c % g != 0:
                raise ValueError(
                    f"PyConv level with kernel {k} and {g} groups needs input and output channels divisible by {g}, "
                    f"got in_channels={in_channels} and {c} output channels (of {out_channels}); "
                    "use fewer pyramid levels or other channel counts."
                )
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.kernel_sizes = kernel_sizes
        self.groups = groups
        self.level_channels = tuple(level_out)
        self.levels = nn.ModuleList(
            conv_type(in_channels, c, kernel_size=k, stride=strides, padding=k // 2, groups=g, bias=bias)
            for k, g, c in zip(kernel_sizes, groups, level_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.levels) == 1:
            return self.levels[0](x)
        return torch.cat([level(x) for level in self.levels], dim=1)


class PyConvNormAct(nn.Sequential):
    """PyConv followed by a norm layer and an activation (the U-Net's "conv, BN, ReLU" unit).

    The norm and activation are built by MONAI's ``get_norm_layer`` and ``get_act_layer``, as
    ``monai.networks.blocks.ADN(ordering="NA")`` builds them. ADN itself is not used: it names its layers ``N`` and
    ``A``, and the shipped weights (``bundles/*/models/model.pt``) hold these layers as ``...unit0.norm.weight``;
    keeping the names ``norm`` and ``act`` keeps those weights loading strictly.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels.
        num_levels: number of pyramid levels (the first ``num_levels`` entries of ``kernel_sizes`` and ``groups``).
        kernel_sizes: kernel sizes to choose the levels from.
        groups: groups to choose the levels from; ``1`` everywhere for a dense multi-kernel convolution.
        norm: norm type and arguments, as MONAI's ``get_norm_layer`` takes them.
        act: activation type and arguments, as MONAI's ``get_act_layer`` takes them.

    Raises:
        ValueError: when ``num_levels`` is not between 1 and ``len(kernel_sizes)``, or as :class:`PyConv` raises.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_levels: int = 4,
        kernel_sizes: Sequence[int] = DEFAULT_KERNELS,
        groups: Sequence[int] = DEFAULT_GROUPS,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
    ) -> None:
        if not 1 <= num_levels <= len(kernel_sizes):
            raise ValueError(f"num_levels must be between 1 and {len(kernel_sizes)}, got {num_levels}.")
        super().__init__()
        conv = PyConv(spatial_dims, in_channels, out_channels, kernel_sizes[:num_levels], groups[:num_levels])
        self.add_module("conv", conv)
        self.add_module("norm", get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels))
        self.add_module("act", get_act_layer(act))


class TwoPyConv(nn.Sequential):
    """Two ``PyConvNormAct`` units: the PyConvU-Net counterpart of the U-Net's double 3x3 convolution.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels of both units.
        num_levels: number of pyramid levels of both units.
        kernel_sizes: kernel sizes to choose the levels from.
        groups: groups to choose the levels from.
        first_groups: groups of the first unit, if they differ (e.g. all ones for a 1-channel image input).
        norm: norm type and arguments.
        act: activation type and arguments.
        dropout: dropout probability after the second unit.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_levels: int = 4,
        kernel_sizes: Sequence[int] = DEFAULT_KERNELS,
        groups: Sequence[int] = DEFAULT_GROUPS,
        first_groups: Sequence[int] | None = None,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        g0 = groups if first_groups is None else first_groups
        unit0 = PyConvNormAct(spatial_dims, in_channels, out_channels, num_levels, kernel_sizes, g0, norm, act)
        unit1 = PyConvNormAct(spatial_dims, out_channels, out_channels, num_levels, kernel_sizes, groups, norm, act)
        self.add_module("unit0", unit0)
        self.add_module("unit1", unit1)
        if dropout > 0:
            self.add_module("dropout", nn.Dropout(dropout))
