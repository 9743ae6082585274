# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""FCN-8s with a VGG16 encoder (MONAI has no FCN), ``spatial_dims``-generic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from pyconv_monai.networks.nets.wrappers import crop_to, pad_to_multiple

__all__ = ["FCN8s", "VGG16_STAGES"]

# VGG16 ("D") convolution widths per stage; each stage ends with a 2x max pooling
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class FCN8s(nn.Module):
    """FCN-8s (Long et al. 2015) with a VGG16 encoder and a learned up-sampling decoder.

    The encoder is VGG16's 13 convolutions (3x3, ReLU) in five stages, each followed by 2x max pooling, without
    the fully connected layers. The decoder up-samples the stride-32 features with five stride-2 transposed
    convolutions (ReLU, then norm); after the first and second it adds the stride-16 (pool4) and stride-8 (pool3)
    features, which makes it FCN-8s. This is the variant used for the PyConvU-Net paper's comparison
    (18.6 M parameters for one input channel). No pretrained weights are loaded.

    The input is padded (replicating its border) to a multiple of 32 and the output cropped back, so any size is
    accepted.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (logits).
        stages: convolution widths of the encoder stages (VGG16 by default).
        decoder_channels: output channels of the five transposed convolutions.
        norm: norm applied after each decoder activation.

    TorchScript: scriptable.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        stages: Sequence[Sequence[int]] = VGG16_STAGES,
        decoder_channels: Sequence[int] = (512, 256, 128, 64, 32),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if len(stages) != 5 or len(decoder_channels) != 5:
            raise ValueError("FCN8s needs five encoder stages and five decoder channel counts.")
        if stages[3][-1] != decoder_channels[0] or stages[2][-1] != decoder_channels[1]:
            raise ValueError(
                "FCN8s adds pool4 and pool3 features to the first two decoder outputs: "
                f"their widths must match, got stages {stages[3][-1]}, {stages[2][-1]} "
                f"and decoder_channels {decoder_channels[0]}, {decoder_channels[1]}."
            )
        self.spatial_dims = spatial_dims
        self.divisor = 2 ** len(stages)
        pool = Pool[Pool.MAX, spatial_dims]
        self.encoder = nn.ModuleList()
        c = in_channels
        for widths in stages:
            layers: list[nn.Module] = []
            for w in widths:
                layers.append(Convolution(spatial_dims, c, w, kernel_size=3, act="relu", norm=None, bias=True))
                c = w
            layers.append(pool(kernel_size=2, stride=2))
            self.encoder.append(nn.Sequential(*layers))
        up = Conv[Conv.CONVTRANS, spatial_dims]
        self.deconvs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for d in decoder_channels:
            self.deconvs.append(up(c, d, kernel_size=3, stride=2, padding=1, output_padding=1))
            self.norms.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=d))
            c = d
        self.act = get_act_layer(("relu", {"inplace": False}))
        self.classifier = Conv[Conv.CONV, spatial_dims](c, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input of shape ``(B, in_channels, *spatial)``.

        Returns:
            logits of shape ``(B, out_channels, *spatial)``.
        """
        size = list(x.shape[2:])
        x = pad_to_multiple(x, self.divisor)
        feats: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        for i, (deconv, norm) in enumerate(zip(self.deconvs, self.norms)):
            x = self.act(deconv(x))
            if i == 0:
                x = x + feats[3]
            elif i == 1:
                x = x + feats[2]
            x = norm(x)
        return crop_to(self.classifier(x), size)
