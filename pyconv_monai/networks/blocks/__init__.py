# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

from .pyconv import DEFAULT_GROUPS, DEFAULT_KERNELS, PyConv, PyConvNormAct, TwoPyConv, pyconv_level_channels
from .pyconv_fast import PYCONV_MODES, FastPyConv, PyConvPart, plan_macs, pyconv_plan

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_KERNELS",
    "PYCONV_MODES",
    "FastPyConv",
    "PyConv",
    "PyConvNormAct",
    "PyConvPart",
    "TwoPyConv",
    "plan_macs",
    "pyconv_level_channels",
    "pyconv_plan",
]
