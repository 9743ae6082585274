# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Pad and crop spatial dimensions inside a network; let a network that needs sizes divisible by ``k`` accept any.

MONAI pads the same way in ``UpCat`` (inline) and in the ``DivisiblePad`` transform (not scriptable); these
functions are TorchScript-compatible, so the networks that call them stay scriptable.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DivisiblePadNet", "pad_to_size", "pad_to_multiple", "crop_to"]


def pad_to_size(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Pad the spatial dimensions of ``x`` at their end, replicating the border, to ``size``.

    Args:
        x: ``(B, C, *spatial)``.
        size: the spatial size wanted, at least ``x``'s in every dimension.

    Returns:
        ``x`` itself when it has that size already, else the padded tensor ``(B, C, *size)``.
    """
    if list(x.shape[2:]) == size:
        return x
    pads: list[int] = []
    for d in range(len(size) - 1, -1, -1):  # F.pad takes the last dimension first
        pads += [0, size[d] - x.shape[d + 2]]
    return F.pad(x, pads, mode="replicate")


def pad_to_multiple(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pad the spatial dimensions of ``x`` (``(B, C, *spatial)``) at their end, replicating the border, to multiples
    of ``k`` (see :func:`pad_to_size`)."""
    return pad_to_size(x, [s + (k - s % k) % k for s in x.shape[2:]])


def crop_to(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Keep the first ``size[d]`` elements of each spatial dimension ``d`` of ``x``."""
    for d in range(len(size)):
        x = x.narrow(d + 2, 0, size[d])
    return x


class DivisiblePadNet(nn.Module):
    """Run ``net`` on its input padded to a multiple of ``divisor`` and crop the output back to the input size.

    Args:
        net: a network whose output has the spatial size of its input, when that size is divisible by ``divisor``.
        divisor: the multiple that ``net`` needs (``2 ** number of down-samplings``).

    TorchScript: scriptable when ``net`` is.
    """

    def __init__(self, net: nn.Module, divisor: int) -> None:
        super().__init__()
        if divisor < 1:
            raise ValueError(f"divisor must be positive, got {divisor}.")
        self.net = net
        self.divisor = divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = list(x.shape[2:])
        return crop_to(self.net(pad_to_multiple(x, self.divisor)), size)
