#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Slices per second for loading and augmenting each input format on this CPU, and whether ~600 slices/s (what one
GPU consumes training a U-Net) could be fed: one table.

    python benchmarks/data_loading.py --out docs/data_loading.md

Every cell is one process with one PyTorch thread, as a DataLoader worker runs, so a machine with ``n`` free cores
feeds at most ``n`` times the cell. Columns:

- ``load``: ``LoadSlice2Dd`` + intensity normalisation + label binarisation, from disk (first epoch, or no cache);
  volume formats read each volume once and slice it (the loader's volume cache).
- ``+ PyConvU-Net aug`` / ``+ U-Net aug``: the same, followed by ``pyconvunet_augmentation`` (flips, 90/180 degree
  rotations) or ``unet_augmentation`` (elastic deformation with shift and rotation, gray value changes).
- ``cached + ...``: the augmentation alone on slices already in memory (MONAI ``CacheDataset`` from the second
  epoch on), the steady state of training.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.transforms import Compose, ScaleIntensityRanged
from monai.utils import set_determinism

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.data import load_datalist
from pyconv_monai.transforms import (
    BinarizeLabeld,
    CTWindowd,
    LoadSlice2Dd,
    MapLabelsd,
    NormalizeEMd,
    pyconvunet_augmentation,
    unet_augmentation,
)

from benchmarks.common import REPO, command_line, markdown_table, shared_data, write_text
from benchmarks.machine import cpu_model, load_average

GPU_RATE = 600.0  # slices/s one GPU consumes (U-Net, H100, bf16 compiled: ../shared/notes/gpu-measurements.md)


def formats(data: Path) -> list[tuple[str, list[dict], Callable]]:
    """(name, datalist, preprocessing after loading) for each format found under ``data``."""
    em = data / "isbi2012_em" if (data / "isbi2012_em").is_dir() else REPO / "data" / "isbi2012_em"
    binarize = BinarizeLabeld("label")
    rows = [("ISBI EM, multi-page TIFF, 512x512 uint8", load_datalist(em), Compose([NormalizeEMd("image"), binarize]))]
    if (data / "lung_ct_2d").is_dir():
        prep = Compose([CTWindowd("image", preset="lung"), binarize])
        rows.append(("lung CT, 2D TIFF, 512x512 int16 HU", load_datalist(data / "lung_ct_2d"), prep))
    if (data / "liver_ct_2d").is_dir():
        prep = Compose([ScaleIntensityRanged("image", 0, 255, 0, 1), binarize])  # already windowed to 8 bits
        rows.append(("liver CT, 2D PNG, 512x512 uint8", load_datalist(data / "liver_ct_2d"), prep))
    volumes = [
        (
            "CT NIfTI volume slices, 122x101 (.nii.gz)",
            "ct_nifti_totalseg/example_ct_sm.nii.gz",
            "ct_nifti_totalseg/example_seg.nii.gz",
            30,
            {5: 1},
        ),
        (
            "CT DICOM series slices, JPEG 2000, 512x512 (+ NIfTI label)",
            "ct_dicom_totalseg/dicom",
            "ct_dicom_totalseg/labels/example_seg_dicom.nii.gz",
            20,
            {5: 1},
        ),
        (
            "CT DICOM series slices, uncompressed, 512x512 (+ NRRD label)",
            "ct_dicom_dcmqi_3slice/dicom",
            "ct_dicom_dcmqi_3slice/seg/liver_spine_seg.nrrd",
            3,
            {1: 1},
        ),
    ]
    for name, image, label, n, mapping in volumes:
        if (data / image).exists():
            items = [{"image": str(data / image), "label": str(data / label), "slice": k} for k in range(n)]
            rows.append((name, items, Compose([CTWindowd("image", preset="abdomen"), MapLabelsd("label", mapping)])))
    return rows


def _rate(run: Callable[[], int], min_seconds: float, repeats: int = 3) -> float:
    """Slices per second of ``run`` (which returns how many slices it produced): the best of ``repeats`` runs of at
    least ``min_seconds`` each, so that other processes on a shared machine disturb the figure less."""
    best = 0.0
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while True:
            count += run()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, count / elapsed)
    return best


def measure(items: list[dict], prep: Callable, max_slices: int, min_seconds: float) -> dict[str, float]:
    """The five rates of one format."""
    items = [items[i * len(items) // min(max_slices, len(items))] for i in range(min(max_slices, len(items)))]
    augment = {"pyconv": pyconvunet_augmentation(prob=0.5), "unet": unet_augmentation(prob=0.5)}
    for aug in augment.values():
        aug.set_random_state(0)

    def load_pass(aug: Callable | None) -> Callable[[], int]:
        def run() -> int:
            loader = LoadSlice2Dd()  # a fresh loader: volumes are read from disk again on every pass
            for item in items:
                out = prep(loader(item))
                if aug is not None:
                    aug(out)
            return len(items)

        return run

    cached = [prep(LoadSlice2Dd()(item)) for item in items]

    def cached_pass(aug: Callable) -> Callable[[], int]:
        def run() -> int:
            for item in cached:
                aug(dict(item))
            return len(cached)

        return run

    return {
        "load": _rate(load_pass(None), min_seconds),
        "load + PyConvU-Net aug": _rate(load_pass(augment["pyconv"]), min_seconds),
        "load + U-Net aug": _rate(load_pass(augment["unet"]), min_seconds),
        "cached + PyConvU-Net aug": _rate(cached_pass(augment["pyconv"]), min_seconds),
        "cached + U-Net aug": _rate(cached_pass(augment["unet"]), min_seconds),
    }


def machine() -> str:
    return (
        f"`nproc` = {os.cpu_count()}, CPU: {cpu_model()}; load average before the run (1/5/15 min): {load_average()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread per process"
    )


def report(results: list[tuple[str, dict[str, float]]], cores: int, header: str) -> str:
    columns = list(results[0][1])
    rows = [(name, *(f"{rates[c]:.0f}" for c in columns)) for name, rates in results]
    lines = [header, "", *markdown_table(("format", *columns), "l" + "r" * len(columns), rows)]
    lines.append("")
    workers = max(cores - 1, 1)  # one core drives the GPU (the training loop, collation, host-to-device copies)
    lines.append(
        f"Verdict for a GPU consuming ~{GPU_RATE:.0f} slices/s: worker processes needed = {GPU_RATE:.0f} / cell; this "
        f"machine has {cores} cores, {workers} of them free for workers beside the training process:"
    )
    needed = {}
    for column in columns:
        slowest = min(results, key=lambda r: r[1][column])
        fastest = max(results, key=lambda r: r[1][column])
        needed[column] = math.ceil(GPU_RATE / slowest[1][column])
        here = workers * slowest[1][column]
        verdict = "yes" if here >= GPU_RATE else "no"
        lines.append(
            f"- {column}: {math.ceil(GPU_RATE / fastest[1][column])}-{needed[column]} workers over the formats; "
            f"{workers} worker(s) here give ~{here:.0f} slices/s for the slowest format: **{verdict}**"
        )
    fed = [c for c in columns if needed[c] <= workers]
    lines.append("")
    lines.append(
        f"**{'Yes' if fed else 'No'}**: this machine can{'' if fed else 'not'} feed ~{GPU_RATE:.0f} slices/s"
        + (f" ({', '.join(fed)})." if fed else ".")
        + f" Reading from disk needs up to {needed['load']} cores, so training must cache the loaded slices "
        f"(`CacheDataset`); then PyConvU-Net's flips and rotations need {needed['cached + PyConvU-Net aug']} worker "
        f"cores and U-Net's elastic deformation {needed['cached + U-Net aug']} (or run the augmentation on the GPU: "
        "the transforms are torch operations)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data(), help="the staged data sets (../shared/data)")
    parser.add_argument("--slices", type=int, default=40, help="slices per format and pass")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum time per run (best of 3 per cell)")
    parser.add_argument("--out", type=Path, help="also write the report (with command and machine) to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # as in a DataLoader worker
    set_determinism(0)
    header = f"Machine: {machine()}."
    results = []
    for name, items, prep in formats(args.data):
        results.append((name, measure(items, prep, args.slices, args.seconds)))
        print(f"measured {name}", file=sys.stderr)
    text = report(results, os.cpu_count() or 1, header)
    print(text)
    if args.out is not None:
        command = command_line(["benchmarks/data_loading.py", *(argv or sys.argv[1:])])
        columns = __doc__.split("Columns:")[1].strip()
        doc = (
            "# Data loading speed\n\nSlices per second (one process, one torch thread) for loading and augmenting "
            f"each format; produced by\n\n```bash\n{command.strip()}\n```\n\nColumns:\n\n{columns}\n\n"
            "Each cell is the best of three runs. The machine was shared (see the load average), so the figures are "
            "lower bounds for an idle one.\n\n"
            f"{text}\n"
        )
        write_text(args.out, doc)
    return text


if __name__ == "__main__":
    main()
