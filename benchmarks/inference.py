#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Seconds to segment a 512x512xN CT study with a bundle's inference path, split into reading, inference and writing:
one table.

    python benchmarks/inference.py                      # the real 20-slice JPEG 2000 series, 4 slices inferred
    python benchmarks/inference.py --slices 20 --out docs/inference_benchmark.md

Every step runs the code of the steps of the bundles' ``inference.json`` (``preprocessing``, ``inferer``,
``postprocessing``), on a real DICOM series from ``../shared/data`` (default: ``ct_dicom_totalseg``, 20 slices,
JPEG 2000 lossless):

- ``read``: the bundle's loader (``LoadVolumed``): find the series' files, read and sort the headers, decode every
  slice to HU;
- ``preprocess``: the rest of the bundle's ``preprocessing`` (orientation, in-plane spacing, CT window);
- ``inference``: the bundle's network (fresh weights: timing does not depend on them) over ``--slices`` slices in
  batches of ``--batch-size`` with MONAI's ``SliceInferer`` under ``torch.no_grad``, after one untimed warm-up
  batch; reported per slice and extrapolated to the study's N slices. On CUDA the GPU is
  timed too (synchronised), with AMP as the bundles use it;
- ``postprocess``: the bundle's ``postprocessing`` without its writers (``Invertd``, sigmoid, threshold);
- ``write NIfTI`` / ``write DICOM SEG``: the study's mask as ``<case>_seg.nii.gz`` and as a DICOM SEG (highdicom).

With ``--optimize dense`` (default when present) a second inference row uses ``pyconv_monai.networks.optimize_pyconv``
(the same function, computed with dense convolutions) and reports the largest difference of its logits.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.inferers import SliceInferer
from monai.transforms import Compose, SaveImaged

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.networks import get_network
from pyconv_monai.writers import series_headers, write_dicom_seg, write_nifti_mask

from benchmarks.common import REPO, command_line, markdown_table, print_and_write, shared_data
from benchmarks.machine import cpu_model, load_average

BUNDLES = {"lung": "lung_ct_segmentation", "liver": "liver_ct_segmentation"}


def _timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def machine(device: torch.device) -> str:
    gpu = f"; GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"`nproc` = {os.cpu_count()}, CPU: {cpu_model()}{gpu}; load average before the run (1/5/15 min): "
        f"{load_average()}; Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} "
        "torch thread(s)"
    )


def _infer(net: torch.nn.Module, image: torch.Tensor, batch_size: int, device: torch.device, amp: bool) -> np.ndarray:
    """The network's logits > 0 (the bundles' sigmoid > 0.5) over the slices of ``image``, as the bundles' inferer."""
    inferer = SliceInferer(roi_size=(-1, -1), sw_batch_size=batch_size, spatial_dim=2, overlap=0.0, progress=False)
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=amp):
        logits = inferer(torch.as_tensor(image)[None].float().to(device), net)
    return torch.as_tensor(logits)[0].float().cpu().numpy() > 0


def _logits(net: torch.nn.Module, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits of the first slice of a ``(1, H, W, N)`` image."""
    with torch.no_grad():
        return net(image[..., 0][None].to(device)).float().cpu()


def run(args: argparse.Namespace) -> str:
    device = torch.device(args.device if args.device != "auto" else ("cuda:0" if torch.cuda.is_available() else "cpu"))
    amp = device.type == "cuda"
    series = Path(args.series)
    host = machine(device)  # before the run: the load average of other users
    rows: list[tuple[str, str, float, float | None]] = []  # step, detail, seconds, per slice

    bundle = BUNDLES[args.bundle]
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    recipe = parser.get_parsed_content("preprocessing").transforms
    loader, preprocessing = recipe[0], Compose(recipe[1:])  # the bundle's own steps, in its order
    post = Compose([t for t in parser.get_parsed_content("postprocessing").transforms if not isinstance(t, SaveImaged)])

    seconds, loaded = _timed(lambda: loader({"image": str(series)}), args.repeats)
    volume = loaded["image"]
    n = volume.shape[-1]
    files = sorted(p for p in series.iterdir() if p.is_file())
    syntax = str(pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
    rows.append(("read", f"{n} DICOM files, {volume.shape[1]}x{volume.shape[2]}, {syntax}", seconds, seconds / n))

    seconds, data = _timed(lambda: preprocessing(dict(loaded)), args.repeats)
    image = data["image"]
    steps = ", ".join(type(t).__name__ for t in preprocessing.transforms)
    detail = f"{bundle} preprocessing ({steps}; orientation {parser['axcodes']})"
    rows.append(("preprocess", detail, seconds, seconds / n))
    affine = np.asarray(volume.affine, float)

    k = min(args.slices, n)
    part = image[..., :k].contiguous()
    torch.manual_seed(0)
    nets = [(args.network, get_network(args.network).to(device).eval())]
    if args.optimize != "none":
        try:
            from pyconv_monai.networks import optimize_pyconv
        except ImportError:  # not in this version of the package
            optimize_pyconv = None
        if optimize_pyconv is not None and any("PyConv" in type(m).__name__ for m in nets[0][1].modules()):
            fast = get_network(args.network).to(device).eval()
            fast.load_state_dict(nets[0][1].state_dict())
            fast = optimize_pyconv(fast, args.optimize, training=False).eval()
            probe = part[..., :1]
            diff = (_logits(nets[0][1], probe, device) - _logits(fast, probe, device)).abs().max().item()
            nets.append((f"{args.network} + optimize_pyconv {args.optimize} (max abs logit diff {diff:.1e})", fast))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    mask, names = None, []
    for name, net in nets:
        _infer(net, part[..., : min(args.batch_size, k)], args.batch_size, device, amp)  # warm-up (cuDNN, caches)
        seconds, out = _timed(lambda: _infer(net, part, args.batch_size, device, amp), args.repeats, sync)
        mask = out if mask is None else mask
        detail = f"{name}, {k} slice(s), batch {args.batch_size}, {device.type}{' AMP' if amp else ''}"
        rows.append(("inference", detail, seconds, seconds / k))
        names.append(name)
    logits = torch.zeros((1, *image.shape[1:]))
    logits[..., :k] = torch.as_tensor(mask, dtype=torch.float32) * 2 - 1  # the network's slices; the others empty
    seconds, out = _timed(lambda: post({**data, "pred": MetaTensor(logits, meta=dict(image.meta))}), args.repeats)
    rows.append(("postprocess", "Invertd (back to the stored grid), sigmoid, threshold", seconds, seconds / n))
    full = np.asarray(out["pred"][0]) > 0.5  # the stored voxel order
    headers = series_headers([str(f) for f in files], affine)

    with tempfile.TemporaryDirectory() as tmp:
        nifti = lambda: write_nifti_mask(full, affine, Path(tmp) / "case_seg.nii.gz", overwrite=True)  # noqa: E731
        seconds, _ = _timed(nifti, args.repeats)
        rows.append(("write NIfTI", f"{n}-slice mask, .nii.gz", seconds, seconds / n))
        frames = full.transpose(2, 1, 0)
        seg = lambda: write_dicom_seg(frames, headers, Path(tmp) / "case_seg.dcm", overwrite=True)  # noqa: E731
        seconds, _ = _timed(seg, args.repeats)
        rows.append(("write DICOM SEG", f"{n}-slice binary SEG (highdicom)", seconds, seconds / n))

    read_s, prep_s = rows[0][2], rows[1][2]
    write_s = sum(r[2] for r in rows if r[0].startswith("write") or r[0] == "postprocess")
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {host}.",
        "",
        f"Study: `{series}` ({n} slices). Inference timed on {k} slice(s) and extrapolated to {n}.",
        "",
    ]
    cells = [(step, detail, f"{seconds:.2f}", f"{per:.3f}") for step, detail, seconds, per in rows]
    inference = [r for r in rows if r[0] == "inference"]
    for name, (_, _, _, per) in zip(names, inference):
        total = read_s + prep_s + per * n + write_s
        cells.append((f"**total, {n} slices**", f"{name}: read + preprocess + {n} x inference + postprocess + write",
                      f"**{total:.1f}**", f"{total / n:.3f}"))  # fmt: skip
    lines += markdown_table(("step", "what", "seconds", "seconds per slice"), "llrr", cells)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", default=str(shared_data() / "ct_dicom_totalseg" / "dicom"), help="DICOM series")
    parser.add_argument("--bundle", choices=("lung", "liver"), default="lung", help="preprocessing of this bundle")
    parser.add_argument("--network", default="pyconvunet", help="a name of pyconv_monai.networks.get_network")
    parser.add_argument("--slices", type=int, default=4, help="slices to run the network on (time per slice x N)")
    parser.add_argument("--batch-size", type=int, default=4, help="slices per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda:0")
    parser.add_argument("--optimize", default="dense", help="optimize_pyconv mode for a second row, or none")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per step (median)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    table = run(args)
    print_and_write(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
