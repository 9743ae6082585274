# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

from .flip import FlipAveragingInferer
from .overlap_tile import OverlapTileInferer, mirror_pad

__all__ = ["FlipAveragingInferer", "OverlapTileInferer", "mirror_pad"]
