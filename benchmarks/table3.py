#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The paper's Table 3: parameters and multiply-accumulates of every network at 1x1x512x512.

Run ``python benchmarks/table3.py`` for the markdown table (``--out FILE`` also writes it, atomically).
MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; FLOPs / 2).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.networks import get_network, list_networks
from pyconv_monai.networks.nets import ValidUNet

from benchmarks.common import print_and_write

__all__ = ["PAPER_TABLE3", "Complexity", "count_parameters", "count_macs", "complexity_table", "format_table", "main"]

# PyConvU-Net paper (Li et al., BMC Bioinformatics 2021), Table 3: (parameters in M, GMac) at 1x1x512x512
PAPER_TABLE3: dict[str, tuple[float, float]] = {
    "unet": (7.77, 48.57),
    "unetplusplus": (9.16, 138.63),
    "resnet34_unet": (21.66, 24.27),
    "attention_unet": (34.88, 266.54),
    "fcn8s": (18.64, 85.86),
    "pyconvunet": (3.7, 10.65),
}

# why a figure differs from the paper's (the paper's baselines come from the UNET-ZOO code; ours reuse MONAI)
NOTES: dict[str, str] = {
    "pyconvunet": "our default (features 16-256, pyramid levels 3,4,4,3,2), under the paper's 3.7 M and 10.65 GMac",
    "unet": "MONAI BasicUNet keeps 64 channels in its last up-sampling (the paper's code halves to 32), "
    "so the full-resolution stage convolves 96 instead of 64 channels",
    "unetplusplus": "MONAI BasicUNetPlusPlus halves the up-sampled channels before concatenating them; "
    "the paper's code concatenates bilinearly up-sampled maps of full width",
    "attention_unet": "MONAI AttentionUnet up-samples with a stride-2 transposed conv computed at the coarse "
    "resolution and merges with one 3x3 conv; the paper's code up-samples first, then convolves at the fine "
    "resolution (4x the MACs) and merges with two 3x3 convs (+3.1 M parameters)",
    "resnet34_unet": "MONAI FlexibleUNet (concatenating decoder, widths 64,64,32,32,16 chosen to match the paper's "
    "size); the paper's code has a LinkNet-style additive decoder",
    "fcn8s": "VGG16 encoder without fully connected layers, five transposed-conv up-samplings (as the paper's code)",
    "unet_valid": "not in the paper; one 700x700 mirror-padded tile gives the 512x512 output (516x516 valid)",
}


@dataclass(frozen=True)
class Complexity:
    """Measured and published complexity of one network."""

    name: str
    params_m: float
    gmac: float
    input_size: int
    paper_params_m: float | None
    paper_gmac: float | None
    note: str

    @staticmethod
    def _rel(ours: float, paper: float | None) -> float | None:
        return None if paper is None else (ours - paper) / paper

    @property
    def params_rel(self) -> float | None:
        """Relative difference of the parameter count from the paper's."""
        return self._rel(self.params_m, self.paper_params_m)

    @property
    def gmac_rel(self) -> float | None:
        """Relative difference of the MACs from the paper's."""
        return self._rel(self.gmac, self.paper_gmac)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters of ``net``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_macs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of ``net`` on a zero tensor of ``input_shape`` (FLOPs / 2).

    Args:
        net: the network (put in eval mode for the count); the input is made on the device of its parameters, so a
            network on the ``meta`` device is counted without computing anything.
        input_shape: ``(B, C, *spatial)``.

    Returns:
        the number of MACs of convolutions and matrix products.
    """
    param = next(net.parameters(), None)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(input_shape, device=None if param is None else param.device))
    finally:
        net.train(was_training)
    return counter.get_total_flops() // 2


def complexity_table(size: int = 512, in_channels: int = 1, out_channels: int = 1) -> list[Complexity]:
    """Measure every registered network on a ``1 x in_channels x size x size`` input.

    The valid-convolution U-Net is measured on the smallest input tile whose output covers ``size``.
    """
    rows = []
    for name in list_networks():
        net = get_network(name, spatial_dims=2, in_channels=in_channels, out_channels=out_channels)
        n = net.valid_input_size(min_output=size) if isinstance(net, ValidUNet) else size
        paper = PAPER_TABLE3.get(name)
        rows.append(
            Complexity(
                name=name,
                params_m=count_parameters(net) / 1e6,
                gmac=count_macs(net, (1, in_channels, n, n)) / 1e9,
                input_size=n,
                paper_params_m=paper[0] if paper else None,
                paper_gmac=paper[1] if paper else None,
                note=NOTES.get(name, ""),
            )
        )
    return rows


def format_table(rows: list[Complexity]) -> str:
    """Markdown table of :func:`complexity_table` rows."""

    def num(v: float | None, fmt: str = "{:.2f}") -> str:
        return "–" if v is None else fmt.format(v)

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:+.1f} %"

    lines = [
        "| network | params (M) | paper (M) | Δ params | GMac | paper GMac | Δ GMac | input | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.params_m:.2f} | {num(r.paper_params_m)} | {pct(r.params_rel)} | {r.gmac:.2f} "
            f"| {num(r.paper_gmac)} | {pct(r.gmac_rel)} | {r.input_size}² | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print Table 3 (and write it to ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="spatial size of the square input (default 512)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    header = (
        f"Parameters and multiply-accumulates at 1x1x{args.size}x{args.size}, one output channel, counted with "
        "torch.utils.flop_counter.FlopCounterMode (FLOPs / 2; convolutions and matrix products).\n"
        "Command: `python benchmarks/table3.py`\n"
    )
    text = header + "\n" + format_table(complexity_table(args.size)) + "\n"
    print_and_write(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
