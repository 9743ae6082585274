#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Choose the Triton PyConv block sizes on this GPU: time a PyConvU-Net training step (forward + backward, no
optimizer) in the "triton" mode for each candidate and print the fastest as ``PYCONV_TRITON_BLOCKS``.

    python benchmarks/triton_tune.py --out tune.md --env tune.env   # then: export $(cat tune.env)

512x512, batch 16, bf16 autocast, channels_last; each candidate: ``--warmup`` untimed steps (Triton compiles
there), then the median of ``--repeats`` steps timed with CUDA events. The table and the choice are rewritten after
every candidate, so a run stopped from outside keeps what it measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_text

__all__ = ["CANDIDATES", "main"]

CANDIDATES: tuple[str, ...] = (
    "M=128,N=16,K=32,DW_M=128,warps=4",
    "M=64,N=16,K=32,DW_M=64,warps=4",
    "M=128,N=32,K=32,DW_M=128,warps=4",
    "M=256,N=16,K=32,DW_M=128,warps=8",
    "M=128,N=16,K=16,DW_M=128,warps=4",
    "M=64,N=32,K=16,DW_M=256,warps=4",
)


def time_step(args: argparse.Namespace) -> float:
    """Median seconds of one forward + backward of PyConvU-Net in the triton mode with the current blocks."""
    import torch.nn.functional as F

    from pyconv_monai.networks import get_network, optimize_pyconv

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    torch.manual_seed(0)
    net = optimize_pyconv(get_network("pyconvunet", spatial_dims=2, in_channels=1, out_channels=1), "triton")
    net = net.to(device, memory_format=fmt).train()
    x = torch.rand(args.batch_size, 1, args.size, args.size, device=device).contiguous(memory_format=fmt)
    target = (torch.rand_like(x) > 0.5).float()
    times = []
    for i in range(args.warmup + args.repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.binary_cross_entropy_with_logits(net(x).float(), target)
        loss.backward()
        net.zero_grad(set_to_none=True)
        if cuda:
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        else:
            elapsed = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(elapsed)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--candidates", default=";".join(CANDIDATES), help="';'-separated KEY=INT,... block settings")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="markdown table of the candidates")
    p.add_argument("--env", help="file receiving PYCONV_TRITON_BLOCKS=<fastest>")
    args = p.parse_args(argv)
    from pyconv_monai.networks.blocks import pyconv_triton as pt

    default = dict(pt.TRITON_BLOCKS)
    rows: list[tuple[str, float | str]] = []
    for cand in [c.strip() for c in args.candidates.split(";") if c.strip()]:
        pt.TRITON_BLOCKS.clear()
        pt.TRITON_BLOCKS.update(default)
        t0 = time.time()
        try:
            pt.set_triton_blocks(cand)
            seconds: float | str = time_step(args)
        except Exception as e:  # noqa: BLE001 - a candidate that fails to compile is reported, not fatal
            seconds = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
        rows.append((cand, seconds))
        print(f"{cand}: {seconds} ({time.time() - t0:.0f} s with compilation)", file=sys.stderr, flush=True)
        timed = [(c, s) for c, s in rows if isinstance(s, float)]
        best = min(timed, key=lambda r: r[1])[0] if timed else None
        lines = [
            f"Triton PyConv blocks, PyConvU-Net forward + backward, {args.size}×{args.size}, batch {args.batch_size}, "
            f"bf16, channels_last (`python benchmarks/triton_tune.py`); median of {args.repeats} steps",
            "",
        ]
        cells = [
            (f"`{c}`{' (chosen)' if c == best else ''}", *(
                (f"{1e3 * s:.1f}", f"{args.batch_size / s:.0f}") if isinstance(s, float) else (s.replace("|", "/"), "–")
            ))
            for c, s in rows
        ]  # fmt: skip
        lines += markdown_table(("blocks", "ms per step", "images/s"), "lrr", cells)
        if args.out:
            write_text(args.out, "\n".join(lines) + "\n")
        if args.env and best:
            write_text(args.env, f"PYCONV_TRITON_BLOCKS={best}\n")
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
