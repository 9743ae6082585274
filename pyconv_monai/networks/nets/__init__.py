# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

from .fcn import FCN8s
from .pyconvunet import PyConvUNet, PyConvUnet
from .unet_valid import ValidUNet
from .unetplusplus import UNetPlusPlus
from .wrappers import DivisiblePadNet

__all__ = ["DivisiblePadNet", "FCN8s", "PyConvUNet", "PyConvUnet", "UNetPlusPlus", "ValidUNet"]
