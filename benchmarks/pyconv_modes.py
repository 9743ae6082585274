# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Which PyConv implementation is fastest here? Interleaved timing of ``optimize_pyconv`` modes on PyConvUNet.

Each round times one training step (forward, BCE loss, backward, Adam step) and one inference call of every mode in
turn, so that load from other processes on a shared machine hits all modes alike; the table gives the median over
the rounds and the ratio to the reference implementation. One command, one table::

    python benchmarks/pyconv_modes.py                      # 128x128, batch 4, 5 rounds, CPU or the first GPU
    python benchmarks/pyconv_modes.py --size 512 --batch-size 16 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.networks import PyConvUNet, optimize_pyconv
from pyconv_monai.networks.blocks import PYCONV_MODES

from benchmarks.common import markdown_table
from benchmarks.machine import cpu_cores, cpu_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    _sync(x.device)
    start = time.perf_counter()
    net.train()
    loss = F.binary_cross_entropy_with_logits(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(x.device)
    return time.perf_counter() - start


@torch.no_grad()
def _infer(net: torch.nn.Module, x: torch.Tensor) -> float:
    _sync(x.device)
    start = time.perf_counter()
    net.eval()
    net(x)
    _sync(x.device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the modes and print a markdown table; returns its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--batch-size", type=int, default=4, help="training and inference batch")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--modes", default=",".join(PYCONV_MODES), help="comma-separated optimize_pyconv modes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 1, args.size, args.size, generator=generator).to(device)
    y = (torch.rand(args.batch_size, 1, args.size, args.size, generator=generator) > 0.5).float().to(device)
    nets, opts = {}, {}
    for mode in modes:
        torch.manual_seed(0)
        nets[mode] = optimize_pyconv(PyConvUNet().to(device), mode)
        opts[mode] = torch.optim.Adam(nets[mode].parameters(), lr=1e-3)
    times: dict[str, dict[str, list[float]]] = {m: {"train": [], "infer": []} for m in modes}
    for r in range(args.rounds + 1):  # round 0 warms up (allocator, oneDNN/cuDNN algorithm choice)
        for mode in modes:
            t_train, t_infer = _train_step(nets[mode], opts[mode], x, y), _infer(nets[mode], x)
            if r:
                times[mode]["train"].append(t_train)
                times[mode]["infer"].append(t_infer)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_model()}, {cpu_cores()} cores"
    print(f"device: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, PyConvUNet default, "
          f"{args.size}x{args.size}, batch {args.batch_size}, median of {args.rounds} interleaved rounds")  # fmt: skip
    base = {k: statistics.median(times[modes[0]][k]) for k in ("train", "infer")}
    rows = []
    for mode in modes:
        train, infer = statistics.median(times[mode]["train"]), statistics.median(times[mode]["infer"])
        rows.append({"mode": mode, "train_s": train, "infer_s": infer})
    cells = [(r["mode"], f"{r['train_s']:.2f}", f"{base['train'] / r['train_s']:.2f}", f"{r['infer_s']:.2f}",
              f"{base['infer'] / r['infer_s']:.2f}") for r in rows]  # fmt: skip
    header = ("mode", "train step s", "x reference", "inference s", "x reference")
    print("\n" + "\n".join(markdown_table(header, "lrrrr", cells)))
    return rows


if __name__ == "__main__":
    main()
