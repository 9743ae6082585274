#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Where the time of one training step goes: torch.profiler's top kernels by device time, per network and mode.

    python benchmarks/profile_step.py --models unet,pyconvunet,pyconvunet:ungrouped --out profile.md

Each model trains ``--warmup`` untimed steps (cuDNN's search), then ``--steps`` profiled steps
(Adam, BCE-with-logits, autocast, channels_last as ``benchmarks/throughput.py``); the table lists the ``--top``
operators/kernels by self device time with their share of the step, and the step's total. On a CPU it profiles CPU
time (dry runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, markdown_table, write_text
from benchmarks.throughput import build_model

__all__ = ["profile_model", "main"]


def _profile_steps(spec: str, args: argparse.Namespace) -> tuple[list, float]:
    """Train ``spec`` for ``--warmup`` steps, then profile ``--steps`` steps.

    The network and its optimizer live only in this call, so that their memory is free when it returns.

    Returns:
        the profiler's events (``key_averages``) and the wall seconds per profiled step.
    """
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    net, _ = build_model(spec)
    net = net.to(device, memory_format=fmt).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(args.batch_size, 1, args.size, args.size, device=device).contiguous(memory_format=fmt)
    target = (torch.rand_like(x) > 0.5).float()
    dtype = torch.bfloat16 if cuda else torch.float32

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=cuda):
            loss = F.binary_cross_entropy_with_logits(net(x).float(), target)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / args.steps
    return list(prof.key_averages()), wall


def profile_model(spec: str, args: argparse.Namespace) -> str:
    """The markdown section of one model: total device time per step and its top kernels."""
    cuda = torch.device(args.device).type == "cuda"
    averages, wall = _profile_steps(spec, args)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in averages if getattr(e, key, 0) > 0]
    if cuda:  # the kernels themselves: operator rows would count their kernels' time a second time
        kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        events = kernels or events
    total = sum(getattr(e, key) for e in events) / args.steps / 1e3  # ms per step (device time summed)
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    lines = [
        f"### {spec}: {total:.1f} ms of {'GPU kernel' if cuda else 'CPU'} time per step, {wall * 1e3:.1f} ms wall "
        f"({args.batch_size / wall:.0f} images/s under the profiler)",
        "",
    ]
    rows = []
    for e in events[: args.top]:
        ms = getattr(e, key) / args.steps / 1e3
        name = e.key.replace("|", "/")
        name = name if len(name) <= 90 else name[:89] + "…"
        rows.append((f"`{name}`", f"{ms:.2f}", f"{100 * ms / total:.1f} %", f"{e.count / args.steps:.0f}"))
    lines += markdown_table(("kernel / operator", "ms per step", "share", "calls per step"), "lrrr", rows)
    if cuda:
        torch.cuda.empty_cache()
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="unet,pyconvunet,pyconvunet:ungrouped")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", help="also write the markdown here")
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    command = command_line(["benchmarks/profile_step.py", *(sys.argv[1:] if argv is None else argv)])
    parts = [
        f"Profile of one training step (`{command}`): {args.size}×{args.size}, batch {args.batch_size}, bf16 "
        "autocast, channels_last, Adam; self time per kernel, summed over the profiled steps ÷ steps.\n"
    ]
    for spec in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            parts.append(profile_model(spec, args))
        except Exception as e:  # noqa: BLE001 - one failing model keeps the others
            parts.append(f"### {spec}: failed: {type(e).__name__}: {e}\n")
        print(parts[-1], flush=True)
        if args.out:
            write_text(args.out, "\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
