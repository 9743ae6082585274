#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Liver Dice of every labelled real CT of ``../shared/data``, with and without the in-plane resampling to the
bundle's pixel spacing, and seconds per slice: one table.

    python benchmarks/spacing.py                       # liver_ct_segmentation, its models/model.pt, CPU
    python benchmarks/spacing.py --always 0.8 1.0      # also rows that resample every slice to 0.8 / 1.0 mm

Each case runs the bundle's ``inference.json`` exactly as ``pyconv-monai segment`` does (``resampling: on``), and
once more with ``pixel_spacing`` overridden to ``[0, 0]`` (``off``: every slice at its own spacing, the behaviour
before issue 11); ``--always`` adds rows where every slice, whatever its spacing, is resampled; ``--tta`` a row
with test-time flip averaging. The written NIfTI mask is compared with the reference label in world coordinates
(both oriented to RAS; the grids must be equal).
Seconds per slice are the wall time of the whole ``segment`` call (loading the weights, reading, resampling, network,
inversion, writing) over the number of slices; they depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Orientation

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.cli import segment
from pyconv_monai.data import geometry_mismatch, tracking_meta
from pyconv_monai.transforms import LoadVolume, in_plane_spacing

from benchmarks.common import command_line, dice, markdown_table, print_and_write, shared_data
from benchmarks.machine import cpu_model, load_average

# (name, input, label file, liver class) of the labelled real CTs in ../shared/data (see its README)
CASES = [
    ("ct_nifti_totalseg (NIfTI)", "ct_nifti_totalseg/example_ct_sm.nii.gz",
     "ct_nifti_totalseg/example_seg.nii.gz", 5),
    ("ct_dicom_totalseg (DICOM, J2K)", "ct_dicom_totalseg/dicom",
     "ct_dicom_totalseg/labels/example_seg_dicom.nii.gz", 5),
    ("ct_dicom_dcmqi_3slice (DICOM)", "ct_dicom_dcmqi_3slice/dicom",
     "ct_dicom_dcmqi_3slice/seg/liver_spine_seg.nii.gz", 1),
]  # fmt: skip


def liver_dice(mask_file: str | os.PathLike, label_file: str | os.PathLike, label_class: int) -> float:
    """Dice of a written mask against ``label == label_class``, compared in world coordinates (both in RAS).

    Raises:
        ValueError: the two do not lie on the same voxel grid.
    """
    with tracking_meta():
        load = LoadVolume(axcodes=None)
        pred = Orientation("RAS", labels=None)(load(mask_file))
        ref = Orientation("RAS", labels=None)(load(label_file))
        problem = geometry_mismatch(pred, ref)
    if problem is not None:
        raise ValueError(f"{mask_file} is not on the grid of {label_file}: {problem}")
    return dice(pred.as_tensor()[0].numpy() > 0, np.rint(ref.as_tensor()[0].numpy()) == label_class)


def grid(path: str | os.PathLike) -> tuple[str, int]:
    """``"<sx> x <sy> mm, HxW"`` of the input as the bundle orients it, and its number of slices."""
    with tracking_meta():
        vol = LoadVolume(axcodes="ALS")(path)
    sx, sy = in_plane_spacing(vol.affine)
    return f"{sx:.3g} x {sy:.3g} mm, {vol.shape[1]}x{vol.shape[2]}", int(vol.shape[-1])


def run(args: argparse.Namespace) -> str:
    device = args.device if args.device != "auto" else ("cuda:0" if torch.cuda.is_available() else "cpu")
    host = (
        f"`nproc` = {os.cpu_count()}, CPU: {cpu_model()}; load average before the run (1/5/15 min): {load_average()}; "
        f"device {device}; Python {platform.python_version()}, torch {torch.__version__}"
    )
    data = shared_data()
    base = {"device": device, "amp": device.startswith("cuda"), "progress": False, "dicom_seg": False}
    if args.ckpt:
        base["ckpt_file"] = os.path.abspath(args.ckpt)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, image, label, cls in CASES:
            if not (data / image).exists():
                print(f"skipping {name}: {data / image} not found", file=sys.stderr)
                continue
            where, slices = grid(data / image)
            modes = [("off", {"pixel_spacing": [0, 0]}), ("on (the bundle's setting)", {})]
            if args.tta:
                modes.append(("on + flip averaging (tta)", {"tta": True}))
            for v in args.always:  # every slice resampled to v, whatever its spacing
                modes.append((f"always to {v:g} mm", {"pixel_spacing": [v, v], "pixel_spacing_kept": [[v, v], [v, v]]}))
            for mode, extra in modes:
                out = Path(tmp) / f"{len(rows)}"
                start = time.perf_counter()
                result = segment(data / image, out, args.bundle, {**base, **extra}, configure_logging=False)
                seconds = time.perf_counter() - start
                mask = out / result[0]["mask"]
                score = liver_dice(mask, data / label, cls)
                rows.append((name, where, mode, score, seconds / slices))
                print(f"{name} resampling {mode}: Dice {score:.4f}, {seconds / slices:.3f} s/slice", file=sys.stderr)
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {host}.",
        "",
        f"Bundle `{args.bundle}`, weights `{args.ckpt or 'models/model.pt'}`; reference: the data set's liver label.",
        "",
    ]
    header = ("CT", "in-plane spacing, matrix", "resampling", "liver Dice", "seconds per slice")
    lines += markdown_table(header, "lllrr", [(n, w, m, f"{d:.3f}", f"{per:.2f}") for n, w, m, d, per in rows])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="liver_ct_segmentation", help="bundle name or folder (a liver bundle)")
    parser.add_argument("--ckpt", help="weights (default: the bundle's models/model.pt)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda:0 or auto")
    parser.add_argument(
        "--always", type=float, nargs="*", default=[], help="also rows resampling every slice to these mm"
    )
    parser.add_argument("--tta", action="store_true", help="also a row with test-time flip averaging")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    table = run(args)
    print_and_write(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
