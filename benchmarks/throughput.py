#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Training and inference throughput of PyConvU-Net (reference and fast PyConv modes) against U-Net: one table.

Every model is measured in the same run on the same device: images/s and peak memory of a training step (forward,
BCE-with-logits, backward, Adam) and of inference, eager and ``torch.compile``-d, and the time of whole training
epochs on the embedded ISBI 2012 EM stack (MONAI ``CacheDataset`` holding the slices on the device,
``ThreadDataLoader``, device-side augmentation, ``DiceMetric``) beside the pure model-step throughput.

    python benchmarks/throughput.py --quick                     # CPU smoke run: 64x64, a few steps, eager
    python benchmarks/throughput.py                             # CUDA: 512x512, batch 16, bf16, NHWC, eager+compiled
    python benchmarks/throughput.py --budget 420 --json r.json --out r.md

Models are registry names (``pyconv_monai.networks.get_network``), ``name:mode`` switching the PyConvs of a
PyConvU-Net (``optimize_pyconv``). Eager models run in this process; compiled ones each in a subprocess with a
time limit (``--timeout``), so that a compile that fails or hangs fills its cells with the reason. ``--budget``
bounds the whole run: what does not fit reads "not run".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, command_line, markdown_table, write_text
from benchmarks.machine import cpu_cores, cpu_model
from benchmarks.table3 import count_macs

__all__ = ["DEFAULT_MODELS", "build_model", "measure", "format_table", "main"]

EM_DIR = REPO / "data" / "isbi2012_em"
DEFAULT_MODELS: tuple[str, ...] = ("unet", "pyconvunet", "pyconvunet:ungrouped", "pyconvunet:dense", "pyconvunet:auto")
QUICK_MODELS = "unet,pyconvunet,pyconvunet:ungrouped,pyconvunet:dense,pyconvunet:auto"
PHASES = ("train", "epoch", "infer")  # in this order: the epochs reuse the training phase's tuning and compile
RESULT_TAG = "@@THROUGHPUT_RESULT@@"

# defaults by setting: (CUDA, CPU, --quick)
DEFAULTS: dict[str, tuple[Any, Any, Any]] = {
    "size": (512, 128, 64),
    "batch_size": (16, 4, 2),
    "precision": ("bf16", "fp32", "fp32"),
    "channels_last": (True, False, False),
    "cudnn_benchmark": (True, False, False),
    "exec": ("eager,compiled", "eager", "eager"),
    "steps": (10, 2, 2),
    "warmup": (3, 1, 1),
    "repeats": (3, 3, 2),
    "epochs": (2, 1, 1),
    "tune_warmup": (2, 1, 0),
    "tune_repeats": (5, 3, 1),
}


# --------------------------------------------------------------------------------------------- environment


def device_name(device: torch.device) -> str:
    """The GPU's name and memory, or the CPU's model name and cores."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"CPU {cpu_model()}, {cpu_cores()} cores, {torch.get_num_threads()} torch threads"


def environment(device: torch.device) -> dict[str, str]:
    """What the numbers were measured on: device, library versions, date."""
    import monai

    env = {
        "device": device_name(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": f"torch {torch.__version__}, MONAI {monai.__version__}, Python {platform.python_version()}",
    }
    if device.type == "cuda":
        env["versions"] += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    return env


# ------------------------------------------------------------------------------------------------- models


def build_model(spec: str) -> tuple[nn.Module, str]:
    """A registry network by name; ``name:mode`` switches its PyConvs (``"auto"`` is applied when tuned).

    Args:
        spec: ``name`` or ``name:mode``, e.g. ``"unet"``, ``"pyconvunet:dense"``.

    Returns:
        the network (CPU, float32, 2D, one input and one output channel) and the PyConv mode (``""`` if none).

    Raises:
        ValueError: for an unknown name or mode, or a mode for a network without PyConvs.
    """
    from pyconv_monai.networks import OPTIMIZE_MODES, get_network, optimize_pyconv, pyconv_modes

    name, _, mode = spec.partition(":")
    net = get_network(name, spatial_dims=2, in_channels=1, out_channels=1)
    if mode:
        if mode not in OPTIMIZE_MODES:
            raise ValueError(f"unknown PyConv mode {mode!r} in {spec!r}; choose one of {', '.join(OPTIMIZE_MODES)}.")
        if not pyconv_modes(net):
            raise ValueError(f"{name} has no PyConv to switch to mode {mode!r}.")
        if mode != "auto":
            optimize_pyconv(net, mode)
    return net, mode


def count_gmac(net: nn.Module, size: int) -> float:
    """GMac of one ``1 x 1 x size x size`` forward pass, counted on the meta device (nothing computed)."""
    return count_macs(copy.deepcopy(net).to("meta"), (1, 1, size, size)) / 1e9


# ------------------------------------------------------------------------------------------- measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak memory (MiB) of the block: ``torch.cuda.max_memory_allocated``, or the process's peak RSS on a CPU."""
    out: dict[str, float] = {}
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):  # Linux: resets the peak RSS (VmHWM) to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
    yield out
    _sync(device)
    if device.type == "cuda":
        out["mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["mib"] = int(line.split()[1]) / 1024


@contextlib.contextmanager
def no_meta_tracking() -> Iterator[None]:
    """MONAI transforms return plain tensors inside the block (``set_track_meta(False)``); the setting is restored."""
    from monai.data import get_track_meta, set_track_meta

    saved = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(saved)


def time_windows(
    step: Callable[[int], Any], device: torch.device, warmup: int, steps: int, repeats: int
) -> tuple[list[float], float]:
    """Seconds of ``repeats`` windows of ``steps`` calls of ``step``, after ``warmup`` untimed calls.

    Returns:
        the windows' seconds (CUDA events on a GPU) and the seconds of the warm-up (compilation, cuDNN search).
    """
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync(device)
    warm, times, i = time.perf_counter() - t0, [], warmup
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        for _ in range(steps):
            step(i)
            i += 1
        if device.type == "cuda":
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            times.append(time.perf_counter() - t0)
    return times, warm


def _cell(images: int, times: list[float], warm: float, peak: dict[str, float]) -> dict[str, Any]:
    rates = [images / t for t in times]
    med = statistics.median(rates)
    spread = (max(rates) - min(rates)) / med if len(rates) > 1 else 0.0
    return {"images_per_s": med, "spread": spread, "peak_mib": peak.get("mib"), "warmup_s": warm}


def _error(e: BaseException | str) -> dict[str, str]:
    if isinstance(e, str):
        return {"error": e}
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return {"error": f"{type(e).__name__}: {msg}"[:200]}


def em_loader(device: torch.device, size: int, batch_size: int, samples: int) -> torch.utils.data.DataLoader:
    """MONAI pipeline over the embedded ISBI 2012 EM stack, cached and augmented on ``device``.

    Call inside :func:`no_meta_tracking`. The 25 slices (512x512, labels {0, 255}) are read with tifffile, scaled
    to [0, 1] / {0, 1} and cached on the device by ``CacheDataset``; random crops to ``size``, flips, 90-degree
    rotations and intensity scaling run on the device in ``ThreadDataLoader``'s thread. An epoch draws ``samples``
    slices with replacement (whole batches only, so that compiled graphs see one shape).
    """
    import numpy as np
    import tifffile
    from monai.data import CacheDataset, ThreadDataLoader
    from monai.transforms import Compose, EnsureTyped, RandFlipd, RandRotate90d, RandScaleIntensityd, RandSpatialCropd

    volume = tifffile.imread(EM_DIR / "train-volume.tif")
    labels = tifffile.imread(EM_DIR / "train-labels.tif")
    data = [
        {"image": (v[None] / np.float32(255)).astype(np.float32), "label": (m[None] > 127).astype(np.float32)}
        for v, m in zip(volume, labels)
    ]
    keys = ["image", "label"]
    transform = Compose(
        [
            EnsureTyped(keys, device=device, track_meta=False),  # the cache holds device tensors
            RandSpatialCropd(keys, roi_size=(size, size), random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandRotate90d(keys, prob=0.5, max_k=3),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
        ]
    )
    ds = CacheDataset(data, transform, cache_rate=1.0, num_workers=0, copy_cache=False, progress=False)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=samples)
    return ThreadDataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=0, drop_last=True)


class Runner:
    """Measures one model, eager or compiled, in the configuration ``cfg`` (the parsed command line)."""

    def __init__(self, spec: str, compiled: bool, cfg: dict[str, Any]) -> None:
        self.cfg, self.compiled = cfg, compiled
        self.device = torch.device(cfg["device"])
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[cfg["precision"]]
        self.fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
        net, self.mode = build_model(spec)
        self.params_m = sum(p.numel() for p in net.parameters()) / 1e6
        self.gmac = count_gmac(net, cfg["size"])
        self.net = net.to(self.device, memory_format=self.fmt)
        self.call: Callable[[torch.Tensor], torch.Tensor] = self.net
        self.prepared: bool | None = None  # the phase (training?) that self.call was prepared for
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.step_rate: float | None = None
        self.notes: list[str] = []

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def batches(self, batch_size: int, n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Random images and binary targets, rotated through."""
        shape = (batch_size, 1, self.cfg["size"], self.cfg["size"])
        return [
            (
                torch.rand(shape, device=self.device).contiguous(memory_format=self.fmt),
                (torch.rand(shape, device=self.device) > 0.5).float(),
            )
            for _ in range(n)
        ]

    def prepare(self, training: bool, example: torch.Tensor) -> None:
        """Train/eval mode, ``auto`` tuning (on this device, under this autocast) and ``torch.compile`` for a phase."""
        self.net.train(training)
        if self.prepared == training:
            return
        if self.mode == "auto":
            from pyconv_monai.networks import optimize_pyconv, pyconv_modes

            t0 = time.perf_counter()
            with self.autocast():
                optimize_pyconv(
                    self.net,
                    "auto",
                    example_input=example,
                    training=training,
                    warmup=self.cfg["tune_warmup"],
                    repeats=self.cfg["tune_repeats"],
                )
            seconds, gmac = time.perf_counter() - t0, count_gmac(self.net, self.cfg["size"])
            if training or self.prepared is None:  # the GMac column: the training choice's
                self.gmac = gmac
            counts = Counter(pyconv_modes(self.net).values()).most_common()
            self.notes.append(
                f"auto for {'training' if training else 'inference'} (tuned in {seconds:.0f} s, {gmac:.2f} GMac): "
                + ", ".join(f"{m}×{n}" for m, n in counts)
            )
        self.call = self.net
        if self.compiled:
            torch._dynamo.reset()
            self.call = torch.compile(self.net, mode=self.cfg["compile_mode"])
        self.prepared = training

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3, fused=self.device.type == "cuda")
            self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype is torch.float16 else None
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs (mode reduce-overhead): a new iteration
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.call(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return logits.detach(), loss.detach()

    def run_train(self) -> dict[str, Any]:
        cfg, data = self.cfg, self.batches(self.cfg["batch_size"])
        self.prepare(True, data[0][0])
        with peak_memory(self.device) as peak:
            times, warm = time_windows(
                lambda i: self.train_step(*data[i % 3]), self.device, cfg["warmup"], cfg["steps"], cfg["repeats"]
            )
        cell = _cell(cfg["steps"] * cfg["batch_size"], times, warm, peak)
        self.step_rate = cell["images_per_s"]
        return cell

    def run_infer(self) -> dict[str, Any]:
        cfg, data = self.cfg, self.batches(self.cfg["infer_batch_size"])
        self.prepare(False, data[0][0])

        def step(i: int) -> torch.Tensor:
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.no_grad(), self.autocast():
                return self.call(data[i % 3][0])

        with peak_memory(self.device) as peak:
            times, warm = time_windows(step, self.device, cfg["warmup"], cfg["steps"], cfg["repeats"])
        return _cell(cfg["steps"] * cfg["infer_batch_size"], times, warm, peak)

    def run_epoch(self) -> dict[str, Any]:
        """Whole training epochs on the ISBI EM stack (the first warms up), with the training phase's model."""
        from monai.metrics import DiceMetric

        cfg = self.cfg
        self.prepare(True, self.batches(cfg["batch_size"], 1)[0][0])
        metric = DiceMetric(include_background=True, reduction="mean")
        epochs = []
        with no_meta_tracking():
            loader = em_loader(self.device, cfg["size"], cfg["batch_size"], cfg["epoch_samples"])
            for epoch in range(1 + cfg["epochs"]):
                _sync(self.device)
                t0 = time.perf_counter()
                wait, steps = 0.0, 0
                batches = iter(loader)
                while True:
                    t = time.perf_counter()
                    batch = next(batches, None)
                    wait += time.perf_counter() - t
                    if batch is None:
                        break
                    logits, _ = self.train_step(batch["image"].contiguous(memory_format=self.fmt), batch["label"])
                    metric(y_pred=(logits > 0).float(), y=batch["label"])  # on the device
                    steps += 1
                dice = metric.aggregate().item()  # the epoch's one host synchronisation
                metric.reset()
                seconds = time.perf_counter() - t0
                if epoch > 0:
                    epochs.append({"seconds": seconds, "wait": wait, "images": steps * cfg["batch_size"], "dice": dice})
        med = sorted(epochs, key=lambda e: e["seconds"])[len(epochs) // 2]
        return {
            "seconds": med["seconds"],
            "images_per_s": med["images"] / med["seconds"],
            "step_images_per_s": self.step_rate,
            "wait_fraction": med["wait"] / med["seconds"],
            "dice": med["dice"],
            "images": med["images"],
        }


def measure(
    spec: str,
    compiled: bool,
    cfg: dict[str, Any],
    deadline: float | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """All phases of one model, eager or compiled; errors are recorded per phase, never raised.

    Args:
        spec: the model (see :func:`build_model`).
        compiled: whether to ``torch.compile`` it.
        cfg: the settings (see :func:`main`).
        deadline: ``time.time()`` after which no further phase starts (its cell reads "not run").
        report: called with the result so far after each phase (a worker prints it, so a timeout keeps it).

    Returns:
        ``{"model", "exec", "params_m", "gmac", "notes", <phase>: cell}``, JSON-serialisable.
    """
    result: dict[str, Any] = {"model": spec, "exec": "compiled" if compiled else "eager", "notes": []}
    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    try:
        runner = Runner(spec, compiled, cfg)
    except Exception as e:  # noqa: BLE001 - a model that cannot be built still gets its row
        result.update({p: _error(e) for p in cfg["phases"]})
        if report is not None:
            report(result)
        return result
    result.update(params_m=runner.params_m, notes=runner.notes)
    for phase in (p for p in PHASES if p in cfg["phases"]):  # epoch after train: it reuses its model and compile
        if deadline is not None and time.time() > deadline:
            result[phase] = _error("not run: --budget spent")
            continue
        print(f"[{spec} {result['exec']}] {phase} ...", file=sys.stderr, flush=True)
        try:
            result[phase] = getattr(runner, f"run_{phase}")()
        except Exception as e:  # noqa: BLE001 - one failed cell must not stop the table
            traceback.print_exc()
            result[phase] = _error(e)
        print(f"[{spec} {result['exec']}] {phase}: {result[phase]}", file=sys.stderr, flush=True)
        result["gmac"] = runner.gmac
        if report is not None:
            report(result)
    result["gmac"] = runner.gmac  # for "auto", of its training choice
    del runner
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_worker(spec: str, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``measure(spec, compiled=True)`` in a subprocess with a time limit; a crash or timeout fills every cell."""
    payload = json.dumps({"spec": spec, "cfg": cfg})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", payload]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:  # on a timeout, or when this process is stopped: the worker and its compile subprocesses go too
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    if timed_out:
        out, _ = proc.communicate()  # what the worker printed before it was stopped
    result: dict[str, Any] = {"model": spec, "exec": "compiled", "notes": []}
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG) :])
            break
    err = f"timeout after {timeout:g} s" if timed_out else f"worker exited with code {proc.returncode} (see the log)"
    for phase in cfg["phases"]:
        result.setdefault(phase, _error(err))
    return result


# ------------------------------------------------------------------------------------------------- report


def _num(v: float | None, fmt: str) -> str:
    return "–" if v is None else fmt.format(v)


def _rate(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "–"
    if "error" in cell:
        error = cell["error"].replace("|", "/")
        return error if len(error) <= 60 else error[:59] + "…"
    rate = cell["images_per_s"]
    spread = f" ±{50 * cell['spread']:.0f}%" if cell.get("spread") else ""
    return (f"{rate:.3g}" if rate < 100 else f"{rate:.0f}") + spread


def _ratio(cell: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    if not cell or not base or "images_per_s" not in cell or "images_per_s" not in base:
        return "–"
    return f"{cell['images_per_s'] / base['images_per_s']:.2f}"


def format_table(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The markdown report: what was measured where, then one row per model and execution."""
    env, cfg = header["env"], header["cfg"]
    precision = {"bf16": "bf16 autocast", "fp16": "fp16 autocast + GradScaler", "fp32": "fp32"}[cfg["precision"]]
    mem = "torch.cuda.max_memory_allocated" if cfg["device"].startswith("cuda") else "peak RSS of the process"
    lines = [
        f"**Device: {env['device']}** ({env['date']}; {env['versions']})",
        "",
        f"- input 1×{cfg['size']}×{cfg['size']}, batch {cfg['batch_size']} (training), {cfg['infer_batch_size']} "
        f"(inference); {precision}; {'channels_last' if cfg['channels_last'] else 'NCHW'}; cudnn.benchmark "
        f"{'on' if cfg['cudnn_benchmark'] else 'off'}; compile mode `{cfg['compile_mode']}`; Adam, BCE-with-logits",
        f"- images/s: median of {cfg['repeats']} windows of {cfg['steps']} steps after {cfg['warmup']} warm-up steps "
        f"(± half the spread of the windows); × = ratio to {cfg['baseline']} with the same execution; peak memory: "
        f"{mem}",
        f"- epoch: {cfg['epoch_samples']} random crops of the 25 ISBI EM slices (CacheDataset on the device, "
        f"ThreadDataLoader, device-side flips/rotations/intensity, DiceMetric), median of {cfg['epochs']} after one "
        "warm-up epoch; ÷ step = epoch images/s ÷ train images/s; wait = share of the epoch spent waiting for data",
        f"- command: `{header['command']}`",
        "",
    ]
    if "epoch" not in cfg["phases"]:
        lines = [line for line in lines if not line.startswith("- epoch:")]
    columns = ("model", "exec", "params (M)", "GMac/img", "train img/s", "×", "train MiB", "infer img/s", "×",
               "infer MiB", "epoch s", "epoch img/s", "÷ step", "wait", "warm-up s")  # fmt: skip
    base = {r["exec"]: r for r in results if r["model"] == cfg["baseline"]}
    rows = []
    for r in results:
        b = base.get(r["exec"], {})
        tr, inf, ep = r.get("train") or {}, r.get("infer") or {}, r.get("epoch") or {}
        if "error" in ep or not ep:
            epoch_cells = (_rate(ep), "", "", "")
        else:
            step = ep["step_images_per_s"]
            per_step = _num(ep["images_per_s"] / step if step else None, "{:.2f}")
            epoch_cells = (f"{ep['seconds']:.2f}", f"{ep['images_per_s']:.3g}", per_step,
                           f"{100 * ep['wait_fraction']:.0f} %")  # fmt: skip
        warm = "/".join(_num(c.get("warmup_s"), "{:.0f}") for c in (tr, inf))
        rows.append(
            (r["model"], r["exec"], _num(r.get("params_m"), "{:.2f}"), _num(r.get("gmac"), "{:.2f}"), _rate(tr),
             _ratio(tr, b.get("train")), _num(tr.get("peak_mib"), "{:.0f}"), _rate(inf), _ratio(inf, b.get("infer")),
             _num(inf.get("peak_mib"), "{:.0f}"), *epoch_cells, warm)
        )  # fmt: skip
    lines += markdown_table(columns, "ll" + "r" * 13, rows)
    notes = [f"- {r['model']} ({r['exec']}): {n}" for r in results for n in r.get("notes", [])]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:1 or cpu")
    p.add_argument("--quick", action="store_true", help="tiny CPU-friendly run (64x64, few steps, fewer models)")
    p.add_argument(
        "--models",
        help="comma-separated registry names, each with an optional PyConv mode name[:ungrouped|dense|"
        "auto]; the first is the baseline of the ratios (default: unet, pyconvunet and every mode)",
    )
    p.add_argument("--exec", help="comma-separated: eager, compiled (default: both on CUDA, eager on CPU)")
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated: train, infer, epoch (default: all)")
    p.add_argument("--size", type=int, help="square input size (default: 512 CUDA, 128 CPU, 64 --quick)")
    p.add_argument("--batch-size", type=int, help="training batch (default: 16 CUDA, 4 CPU, 2 --quick)")
    p.add_argument("--infer-batch-size", type=int, help="inference batch (default: 4 x training batch)")
    p.add_argument(
        "--precision", choices=("bf16", "fp16", "fp32"), help="autocast dtype (default: bf16 CUDA, fp32 CPU)"
    )
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC (default: on for CUDA)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, help="default: on for CUDA")
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        help="torch.compile mode; reduce-overhead adds CUDA graphs (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, help="timed steps per window")
    p.add_argument("--warmup", type=int, help="untimed steps first (cuDNN search, compilation)")
    p.add_argument("--repeats", type=int, help="timed windows; the median counts")
    p.add_argument("--epochs", type=int, help="timed epochs after one warm-up epoch")
    p.add_argument("--epoch-samples", type=int, help="samples per epoch (default: 8 batches)")
    p.add_argument("--tune-warmup", type=int, help="auto: untimed calls per candidate")
    p.add_argument("--tune-repeats", type=int, help="auto: timed calls per candidate")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per compiled model (default: %(default)s)")
    p.add_argument("--budget", type=float, help="seconds for the whole run; what does not fit reads 'not run'")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compiled models in subprocesses with --timeout (default: on)",
    )
    p.add_argument("--json", help="also write the raw results to this file")
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    column = 2 if args.quick else 0 if torch.device(args.device).type == "cuda" else 1
    for key, values in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[column])
    if args.models is None:
        args.models = QUICK_MODELS if args.quick else ",".join(DEFAULT_MODELS)
    if args.infer_batch_size is None:
        args.infer_batch_size = 4 * args.batch_size
    if args.epoch_samples is None:
        args.epoch_samples = 8 * args.batch_size if column == 0 else 2 * args.batch_size
    return args


@contextlib.contextmanager
def _torch_settings(cfg: dict[str, Any]) -> Iterator[None]:
    """cuDNN benchmark and thread count for the run, restored afterwards."""
    saved = torch.backends.cudnn.benchmark, torch.get_num_threads()
    torch.backends.cudnn.benchmark = cfg["cudnn_benchmark"]
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.set_num_threads(saved[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every model, print the table, and write ``--out`` / ``--json``."""
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        with _torch_settings(job["cfg"]):
            measure(job["spec"], True, job["cfg"], report=lambda r: print(RESULT_TAG + json.dumps(r), flush=True))
        return 0
    t_start = time.time()
    keys = ["device", "size", "batch_size", "infer_batch_size", "precision", "channels_last", "cudnn_benchmark"]
    keys += ["compile_mode", "steps", "warmup", "repeats", "epochs", "epoch_samples", "tune_warmup", "tune_repeats"]
    cfg = {k: getattr(args, k) for k in keys + ["threads"]}
    cfg["phases"] = [p.strip() for p in args.phases.split(",") if p.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    execs = [e.strip() for e in args.exec.split(",") if e.strip()]
    if not set(cfg["phases"]) <= set(PHASES) or not set(execs) <= {"eager", "compiled"} or not models:
        raise SystemExit(f"unknown phases {cfg['phases']} or executions {execs}, or no models")
    cfg["baseline"] = models[0]
    command = command_line(["benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)])
    header = {"env": {}, "cfg": cfg, "command": command}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped from outside: unwind, killing the worker
    results: list[dict[str, Any]] = []
    with _torch_settings(cfg):
        header["env"] = environment(torch.device(cfg["device"]))
        print(f"device: {header['env']['device']}; {header['env']['versions']}", file=sys.stderr, flush=True)
        for ex in execs:  # every eager row first: a budget that runs out cuts compiled rows, not the baseline
            for spec in models:
                t0 = time.time()
                deadline = None if args.budget is None else t_start + args.budget
                if deadline is not None and deadline - t0 < 10:
                    result = {"model": spec, "exec": ex, "notes": []}
                    result.update({p: _error("not run: --budget spent") for p in cfg["phases"]})
                elif ex == "compiled" and args.isolate:
                    timeout = args.timeout if deadline is None else min(args.timeout, deadline - t0)
                    result = run_worker(spec, cfg, timeout)
                else:
                    result = measure(spec, ex == "compiled", cfg, deadline)
                results.append(result)
                print(f"[{spec} {ex}] done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
                _write(args, format_table(results, header), header, results)  # a stopped run keeps what it has
    text = format_table(results, header)
    print(text)
    _write(args, text, header, results)
    return 0


def _write(args: argparse.Namespace, text: str, header: dict[str, Any], results: list[dict[str, Any]]) -> None:
    if args.out:
        write_text(args.out, text)
    if args.json:
        write_text(args.json, json.dumps({"header": header, "results": results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
