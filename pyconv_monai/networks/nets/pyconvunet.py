# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""PyConvU-Net: a U-Net whose convolutions are pyramidal convolutions (Li et al., BMC Bioinformatics 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool
from pyconv_monai.networks.blocks.pyconv import DEFAULT_GROUPS, DEFAULT_KERNELS, TwoPyConv
from pyconv_monai.networks.nets.wrappers import pad_to_size

__all__ = ["PyConvUNet", "PyConvUnet"]


class PyConvUNet(nn.Module):
    """PyConvU-Net: U-Net encoder/decoder with every convolution replaced by a pyramidal convolution.

    Each stage holds two "PyConv, norm, activation" units with "same" padding; the encoder down-samples by
    max pooling and the decoder up-samples by a stride-2 transposed convolution and concatenates the skip
    connection. The network returns logits; the activation belongs to the post-transforms.

    Default configuration (2D, one input channel, 512x512): 1.58 M parameters and 8.97 GMac, within the paper's
    3.7 M / 10.65 GMac (``python benchmarks/table3.py``). Following PyConv's design rule, small feature maps
    get fewer pyramid levels (the bottleneck, at 1/16 resolution, keeps kernels 3 and 5); the 16-channel first
    stage takes three levels, since its 16 channels cannot be split into four levels of which one has 16 groups.

    The first unit sees the image channels, which are too few to be grouped: its levels use one group each
    (a dense multi-scale convolution). Any input size is accepted: decoder features are padded to the size
    of their skip connection.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels (classes, logits).
        features: number of feature channels of each stage, from the full-resolution stage down to the
            bottleneck; its length is the number of stages (depth + 1).
        stage_levels: number of pyramid levels of each stage (same length as ``features``); pyramid level ``i``
            uses ``kernel_sizes[i]`` and ``groups[i]``.
        kernel_sizes: kernel size of each pyramid level.
        groups: number of groups of each pyramid level.
        norm: norm type and arguments, e.g. ``"batch"`` or ``("instance", {"affine": True})``.
        act: activation type and arguments.
        dropout: dropout probability at the end of the bottleneck stage.

    Raises:
        ValueError: at construction, for inconsistent lengths, unsupported ``spatial_dims``, or channel
            counts that a level's groups do not divide.

    Example::

        net = PyConvUNet(spatial_dims=2, in_channels=1, out_channels=1)
        logits = net(torch.rand(2, 1, 512, 512))  # (2, 1, 512, 512)

    TorchScript: scriptable (``monai.bundle ckpt_export`` with the default ``torch.jit.script``).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        stage_levels: Sequence[int] = (3, 4, 4, 3, 2),
        kernel_sizes: Sequence[int] = DEFAULT_KERNELS,
        groups: Sequence[int] = DEFAULT_GROUPS,
        norm: str | tuple = "batch",
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        features, stage_levels = tuple(features), tuple(stage_levels)
        if spatial_dims not in (2, 3):
            raise ValueError(f"PyConvUNet supports spatial_dims 2 or 3, got {spatial_dims}.")
        if len(features) < 2:
            raise ValueError(f"PyConvUNet needs at least two stages (features), got {features}.")
        if len(stage_levels) != len(features):
            raise ValueError(
                f"PyConvUNet needs one pyramid level count per stage: features={features}, "
                f"stage_levels={stage_levels}."
            )
        if len(kernel_sizes) != len(groups):
            raise ValueError(f"kernel_sizes {tuple(kernel_sizes)} and groups {tuple(groups)} differ in length.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.stage_levels = stage_levels

        def stage(
            c_in: int, c_out: int, i: int, first_groups: Sequence[int] | None = None, p: float = 0.0
        ) -> TwoPyConv:
            n = stage_levels[i]
            try:
                return TwoPyConv(spatial_dims, c_in, c_out, n, kernel_sizes, groups, first_groups, norm, act, p)
            except ValueError as e:
                raise ValueError(f"PyConvUNet stage {i} ({features[i]} features, {n} levels): {e}") from e

        depth = len(features) - 1
        self.encoder = nn.ModuleList()
        for i, f in enumerate(features):
            if i == 0:
                self.encoder.append(stage(in_channels, f, 0, first_groups=(1,) * len(groups)))
            else:
                self.encoder.append(stage(features[i - 1], f, i, p=dropout if i == depth else 0.0))
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        up_type = Conv[Conv.CONVTRANS, spatial_dims]
        # decoder stages are stored bottom-up, in the order the forward pass visits them
        bottom_up = range(depth - 1, -1, -1)
        self.upsample = nn.ModuleList(up_type(features[i + 1], features[i], kernel_size=2, stride=2) for i in bottom_up)
        self.decoder = nn.ModuleList(stage(2 * features[i], features[i], i) for i in bottom_up)
        self.final_conv = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input of shape ``(B, in_channels, *spatial)``.

        Returns:
            logits of shape ``(B, out_channels, *spatial)``.
        """
        skips: list[torch.Tensor] = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.upsample, self.decoder):
            skip = skips.pop()
            # pooling an odd size drops its last row: the up-sampled map may be one short of the skip (as in UpCat)
            x = dec(torch.cat([skip, pad_to_size(up(x), list(skip.shape[2:]))], dim=1))
        return self.final_conv(x)


PyConvUnet = PyConvUNet
