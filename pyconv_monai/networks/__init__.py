# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Networks of the PyConvU-Net comparison; every class is usable as a ``_target_`` in bundle configs."""

from .blocks import FastPyConv, PyConv, PyConvNormAct, TwoPyConv
from .nets import FCN8s, PyConvUNet, PyConvUnet, UNetPlusPlus, ValidUNet
from .pyconv_tuning import OPTIMIZE_MODES, autotune_pyconv, optimize_pyconv, pyconv_modes
from .registry import NETWORKS, NetworkSpec, get_network, list_networks

__all__ = [
    "FCN8s",
    "FastPyConv",
    "NETWORKS",
    "OPTIMIZE_MODES",
    "NetworkSpec",
    "PyConv",
    "PyConvNormAct",
    "PyConvUNet",
    "PyConvUnet",
    "TwoPyConv",
    "UNetPlusPlus",
    "ValidUNet",
    "autotune_pyconv",
    "get_network",
    "list_networks",
    "optimize_pyconv",
    "pyconv_modes",
]
