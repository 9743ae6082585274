# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Overlap-tile inference (Ronneberger et al. 2015) for networks with unpadded convolutions."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.utils import ensure_tuple_rep

__all__ = ["OverlapTileInferer", "mirror_pad"]


def mirror_pad(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror-pad the spatial dimensions of ``x`` by any amount, reflecting repeatedly where a pad exceeds the size.

    Args:
        x: tensor of shape ``(B, C, *spatial)``.
        pads: ``(before, after)`` for each spatial dimension.

    Returns:
        the padded tensor.
    """
    for d, (before, after) in enumerate(pads):
        dim = d + 2
        while before > 0 or after > 0:
            size = x.shape[dim]
            if size == 1:  # the mirror image of a single element is itself
                x = x.repeat_interleave(1 + before + after, dim=dim)
                break
            b, a = min(before, size - 1), min(after, size - 1)
            # F.pad's reflect mode pads the last dimensions; move `dim` last, pad, move it back
            moved = x.movedim(dim, -1)
            shape = moved.shape
            flat = moved.reshape(-1, 1, shape[-1])
            flat = F.pad(flat, (b, a), mode="reflect")
            x = flat.reshape(*shape[:-1], flat.shape[-1]).movedim(-1, dim)
            before, after = before - b, after - a
    return x


class OverlapTileInferer(Inferer):
    """Segment an image of any size with a network whose output is smaller than its input.

    The image is mirror-padded by the network's margin (half the difference between tile input and output), cut
    into tiles of ``roi_size`` whose outputs abut exactly, and the stitched output is cropped back to the input's
    size, so the segmentation is seamless and has the input's shape.

    Args:
        roi_size: input tile size (one int for every dimension, or one per dimension). It must be valid for the
            network, e.g. 572 for :class:`pyconv_monai.networks.ValidUNet` in 2D.
        sw_batch_size: number of tiles per forward pass.

    Example::

        inferer = OverlapTileInferer(roi_size=572, sw_batch_size=4)
        logits = inferer(image, ValidUNet(spatial_dims=2, in_channels=1, out_channels=2))  # image's shape
    """

    def __init__(self, roi_size: Sequence[int] | int = 572, sw_batch_size: int = 1) -> None:
        super().__init__()
        self.roi_size = roi_size
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be positive, got {sw_batch_size}.")
        self.sw_batch_size = sw_batch_size

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """
        Args:
            inputs: image of shape ``(B, C, *spatial)``.
            network: the valid-convolution network; extra ``args``/``kwargs`` are passed to it.

        Returns:
            the network's output for the whole image, of shape ``(B, out_channels, *spatial)``.
        """
        spatial = tuple(inputs.shape[2:])
        tile_in = ensure_tuple_rep(self.roi_size, len(spatial))
        output_size = getattr(network, "output_size", None)
        if callable(output_size):  # e.g. ValidUNet: checks that every pooling sees an even size
            for n in tile_in:
                output_size(n)
        zeros = torch.zeros((1, inputs.shape[1], *tile_in), dtype=inputs.dtype, device=inputs.device)
        try:
            with torch.no_grad():  # one zero tile tells the output size, hence the margin
                probe = network(zeros, *args, **kwargs)
        except RuntimeError as e:
            raise ValueError(f"roi_size {tile_in} is not a valid input size for this network: {e}") from e
        tile_out = tuple(probe.shape[2:])
        margins = []
        for i, o in zip(tile_in, tile_out):
            if o <= 0 or (i - o) % 2:
                raise ValueError(
                    f"roi_size {tile_in} gives output {tile_out}: the network must shrink each tile symmetrically."
                )
            margins.append((i - o) // 2)
        counts = [math.ceil(s / o) for s, o in zip(spatial, tile_out)]
        pads = [(m, m + n * o - s) for m, n, o, s in zip(margins, counts, tile_out, spatial)]
        padded = mirror_pad(inputs, pads)
        output = torch.zeros(
            (inputs.shape[0], probe.shape[1], *[n * o for n, o in zip(counts, tile_out)]),
            dtype=probe.dtype,
            device=probe.device,
        )
        starts = list(itertools.product(*[range(n) for n in counts]))
        for chunk in range(0, len(starts), self.sw_batch_size):
            batch_idx = starts[chunk : chunk + self.sw_batch_size]
            tiles = [
                padded[
                    (slice(None), slice(None), *[slice(k * o, k * o + i) for k, o, i in zip(idx, tile_out, tile_in)])
                ]
                for idx in batch_idx
            ]
            result = network(torch.cat(tiles, dim=0), *args, **kwargs)
            for j, idx in enumerate(batch_idx):
                part = result[j * inputs.shape[0] : (j + 1) * inputs.shape[0]]
                output[(slice(None), slice(None), *[slice(k * o, (k + 1) * o) for k, o in zip(idx, tile_out)])] = part
        return output[(slice(None), slice(None), *[slice(0, s) for s in spatial])]
