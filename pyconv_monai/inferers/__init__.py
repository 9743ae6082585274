# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

from .overlap_tile import OverlapTileInferer, mirror_pad

__all__ = ["OverlapTileInferer", "mirror_pad"]
