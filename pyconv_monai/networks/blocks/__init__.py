# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

from .pyconv import DEFAULT_GROUPS, DEFAULT_KERNELS, PyConv, PyConvNormAct, TwoPyConv, pyconv_level_channels

__all__ = ["DEFAULT_GROUPS", "DEFAULT_KERNELS", "PyConv", "PyConvNormAct", "TwoPyConv", "pyconv_level_channels"]
