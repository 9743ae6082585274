# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""One table of every network of the PyConvU-Net comparison: MONAI's own classes and ours, at the paper's size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn
from monai.networks.nets import AttentionUnet, BasicUNet, FlexibleUNet
from pyconv_monai.networks.nets import DivisiblePadNet, FCN8s, PyConvUNet, UNetPlusPlus, ValidUNet

__all__ = ["NetworkSpec", "NETWORKS", "get_network", "list_networks"]


@dataclass(frozen=True)
class NetworkSpec:
    """How to build one network of the comparison.

    Attributes:
        cls: the class (MONAI's or ours).
        defaults: keyword arguments giving the paper's configuration.
        divisor: spatial sizes the class itself needs to be multiples of; :func:`get_network` wraps such a
            network in :class:`DivisiblePadNet` (1: any size works as it is).
        export: how ``monai.bundle ckpt_export`` exports it: ``"script"`` (TorchScript scripting) or ``"trace"``
            (``--use_trace True --input_shape [1, C, H, W]``; the traced module then takes that shape only).
        note: what the network is and where it comes from.
    """

    cls: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    divisor: int = 1
    export: str = "script"
    note: str = ""


NETWORKS: dict[str, NetworkSpec] = {
    "pyconvunet": NetworkSpec(PyConvUNet, {}, note="PyConvU-Net (ours): U-Net with pyramidal convolutions"),
    "unet": NetworkSpec(
        BasicUNet,
        {"features": (32, 64, 128, 256, 512, 32), "norm": ("batch", {"affine": True}), "upsample": "deconv"},
        note="MONAI BasicUNet: two 3x3 conv + BN + ReLU per stage, max pooling, transposed-conv up-sampling",
    ),
    "unet_valid": NetworkSpec(ValidUNet, {}, note="original U-Net (Ronneberger 2015), unpadded convolutions"),
    "unetplusplus": NetworkSpec(UNetPlusPlus, {}, note="MONAI BasicUNetPlusPlus without deep supervision"),
    "attention_unet": NetworkSpec(
        AttentionUnet,
        {"channels": (64, 128, 256, 512, 1024), "strides": (2, 2, 2, 2)},
        divisor=16,
        note="MONAI AttentionUnet (Oktay et al. 2018)",
    ),
    "resnet34_unet": NetworkSpec(
        FlexibleUNet,
        {"backbone": "resnet34", "pretrained": False, "decoder_channels": (64, 64, 32, 32, 16)},
        divisor=32,
        export="trace",  # MONAI's ResNet blocks hold a functools.partial shortcut that TorchScript cannot script
        note="MONAI FlexibleUNet with a ResNet34 encoder (random init, nothing downloaded)",
    ),
    "fcn8s": NetworkSpec(FCN8s, {}, note="FCN-8s with a VGG16 encoder (ours; MONAI has none)"),
}


def list_networks() -> list[str]:
    """Names accepted by :func:`get_network`."""
    return list(NETWORKS)


def get_network(
    name: str, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, **kwargs: Any
) -> nn.Module:
    """Build a network of the comparison by name, in the paper's configuration unless ``kwargs`` override it.

    Args:
        name: one of :func:`list_networks` (case-insensitive; ``-`` and ``_`` are interchangeable).
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (logits).
        kwargs: constructor arguments that replace the paper's defaults.

    Returns:
        the network, randomly initialised; it accepts any spatial size that its depth allows (networks whose
        class needs sizes divisible by 16 or 32 come wrapped in :class:`DivisiblePadNet`).

    Raises:
        ValueError: for an unknown name.

    Example (bundle config)::

        "network_def": {"_target_": "pyconv_monai.networks.get_network", "name": "unet", "out_channels": 1}
    """
    key = str(name).lower().replace("-", "_")
    if key not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}.")
    spec = NETWORKS[key]
    args = {**spec.defaults, **kwargs}
    net = spec.cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **args)
    return DivisiblePadNet(net, spec.divisor) if spec.divisor > 1 else net
