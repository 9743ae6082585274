# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""UNet++ returning a single tensor (MONAI's ``BasicUNetPlusPlus`` returns a list)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNetPlusPlus

__all__ = ["UNetPlusPlus"]


class UNetPlusPlus(nn.Module):
    """MONAI's ``BasicUNetPlusPlus`` (Zhou et al. 2018) without deep supervision, returning one logits tensor.

    Bundle post-transforms, metrics and ``ckpt_export`` expect one tensor per forward pass; this wrapper holds the
    MONAI network as ``net`` and returns its single output. The unused deep-supervision heads are removed.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels (logits).
        features: six feature counts, as ``BasicUNetPlusPlus`` takes them; the default is the paper's size
            (32...512).
        norm: norm type and arguments.
        upsample: up-sampling mode of the decoder nodes (``"deconv"``, ``"pixelshuffle"`` or ``"nontrainable"``).
        dropout: dropout probability.

    TorchScript: scriptable.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512, 32),
        norm: str | tuple = ("batch", {"affine": True}),
        upsample: str = "deconv",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = BasicUNetPlusPlus(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            deep_supervision=False,
            norm=norm,
            dropout=dropout,
            upsample=upsample,
        )
        # BasicUNetPlusPlus builds the deep-supervision heads even without deep supervision; they would be
        # parameters without gradients (counted in the size, and an error under DistributedDataParallel)
        for name in ("final_conv_0_1", "final_conv_0_2", "final_conv_0_3"):
            setattr(self.net, name, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of the last (full-depth) decoder node."""
        return self.net(x)[0]
