# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Test-time flip averaging around any inferer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["FlipAveragingInferer"]


class FlipAveragingInferer(Inferer):
    """The mean of ``inferer``'s output on the input and on the input flipped along each of ``dims`` (flipped back).

    For a 2D network run slice by slice over ``(B, C, H, W, N)`` volumes (MONAI ``SliceInferer``), ``dims=(2, 3)``
    averages the slice, the slice flipped top to bottom and the slice flipped left to right: ``1 + len(dims)`` times
    the network's time.

    Args:
        inferer: the inferer to run, e.g. MONAI ``SliceInferer``.
        dims: the spatial axes to flip, one at a time.
    """

    def __init__(self, inferer: Inferer, dims: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        self.inferer = inferer
        self.dims = tuple(int(d) for d in dims)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """
        Args:
            inputs: the batch, e.g. ``(B, C, H, W, N)``.
            network: the network (or runtime) to run.

        Returns:
            the averaged output, float32.
        """
        out = self.inferer(inputs, network, *args, **kwargs).float()
        for dim in self.dims:
            flipped = self.inferer(torch.flip(inputs, dims=(dim,)), network, *args, **kwargs)
            out = out + torch.flip(flipped, dims=(dim,)).float()
        return out / float(1 + len(self.dims))
