# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Networks of the PyConvU-Net comparison; every class is usable as a ``_target_`` in bundle configs."""

from .blocks import PyConv, PyConvNormAct, TwoPyConv
from .nets import FCN8s, PyConvUNet, PyConvUnet, UNetPlusPlus, ValidUNet
from .registry import NETWORKS, NetworkSpec, get_network, list_networks

__all__ = [
    "FCN8s",
    "NETWORKS",
    "NetworkSpec",
    "PyConv",
    "PyConvNormAct",
    "PyConvUNet",
    "PyConvUnet",
    "TwoPyConv",
    "UNetPlusPlus",
    "ValidUNet",
    "get_network",
    "list_networks",
]
