# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The original U-Net (Ronneberger et al. 2015) with unpadded ("valid") convolutions, ``spatial_dims``-generic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool

__all__ = ["ValidUNet"]


class ValidUNet(nn.Module):
    """U-Net with unpadded convolutions: the output is smaller than the input by a fixed margin.

    Each stage has two unpadded 3x3 convolutions with ReLU; the encoder down-samples by 2x max pooling, the decoder
    up-samples by a 2x2 transposed convolution that halves the channels, concatenates the centre crop of the skip
    connection and applies two more convolutions. With the defaults (64...1024 features, 2D) a 572x572 tile gives a
    388x388 output, as in the paper. Use :class:`pyconv_monai.inferers.OverlapTileInferer` to segment images of any
    size seamlessly (mirror-padded input, output cropped back to the input size).

    Not every input size is valid: every feature map entering a pooling must have an even size.
    :meth:`output_size` checks a size and :meth:`valid_input_size` finds one.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (logits).
        features: feature channels of each stage, top to bottom (length = depth + 1).
        norm: optional norm after each convolution (``None`` as in the paper).
        dropout: dropout probability at the end of the contracting path (the paper's only regulariser).

    TorchScript: scriptable.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str | tuple | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        features = tuple(features)
        if len(features) < 2:
            raise ValueError(f"ValidUNet needs at least two stages, got features={features}.")
        self.spatial_dims = spatial_dims
        self.depth = len(features) - 1
        self.convs_per_stage = 2
        self.kernel_size = 3

        def two_conv(c_in: int, c_out: int, p: float = 0.0) -> nn.Sequential:
            layers: list[nn.Module] = [
                Convolution(spatial_dims, c_in, c_out, kernel_size=3, padding=0, act="relu", norm=norm),
                Convolution(spatial_dims, c_out, c_out, kernel_size=3, padding=0, act="relu", norm=norm),
            ]
            if p > 0:
                layers.append(nn.Dropout(p))
            return nn.Sequential(*layers)

        self.encoder = nn.ModuleList(
            two_conv(in_channels if i == 0 else features[i - 1], f, dropout if i == self.depth else 0.0)
            for i, f in enumerate(features)
        )
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        up = Conv[Conv.CONVTRANS, spatial_dims]
        bottom_up = range(self.depth - 1, -1, -1)
        self.upsample = nn.ModuleList(up(features[i + 1], features[i], kernel_size=2, stride=2) for i in bottom_up)
        self.decoder = nn.ModuleList(two_conv(2 * features[i], features[i]) for i in bottom_up)
        self.final_conv = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)

    def _walk_sizes(self, input_size: int) -> tuple[int, str]:
        """Output size for ``input_size`` along one dimension, or ``(-1, reason)`` when it is not valid."""
        shrink = self.convs_per_stage * (self.kernel_size - 1)
        n = input_size
        for level in range(self.depth):
            n -= shrink
            if n <= 0 or n % 2:
                return -1, f"the feature map entering pooling {level + 1} would have size {n}"
            n //= 2
        n -= shrink
        for _ in range(self.depth):
            n = 2 * n - shrink
        if n <= 0:
            return -1, "it is too small"
        return n, ""

    def output_size(self, input_size: int) -> int:
        """Output size along one dimension for an input of ``input_size``.

        Raises:
            ValueError: when the size is too small or a feature map entering a pooling would be odd.
        """
        out, reason = self._walk_sizes(input_size)
        if out < 0:
            raise ValueError(
                f"input size {input_size} is not valid for this ValidUNet: {reason}; "
                f"the next valid size is {self.valid_input_size(min_input=input_size)}."
            )
        return out

    def valid_input_size(self, min_output: int = 1, min_input: int = 1) -> int:
        """Smallest valid input size that is at least ``min_input`` and gives at least ``min_output`` outputs."""
        n = max(1, min_input)
        while self._walk_sizes(n)[0] < min_output:
            n += 1
        return n

    @staticmethod
    def _center_crop(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        for d in range(2, x.dim()):
            start = (x.shape[d] - ref.shape[d]) // 2
            x = x.narrow(d, start, ref.shape[d])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input of shape ``(B, in_channels, *spatial)`` with valid spatial sizes.

        Returns:
            logits of shape ``(B, out_channels, *[output_size(s) for s in spatial])``.
        """
        skips: list[torch.Tensor] = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.upsample, self.decoder):
            x = up(x)
            x = dec(torch.cat([self._center_crop(skips.pop(), x), x], dim=1))
        return self.final_conv(x)
