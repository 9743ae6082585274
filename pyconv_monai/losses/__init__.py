# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Losses MONAI lacks."""

from .weighted_ce import WeightedCrossEntropyLoss

__all__ = ["WeightedCrossEntropyLoss"]
