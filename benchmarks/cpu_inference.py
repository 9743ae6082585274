#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""PyConvU-Net and U-Net on the CPU runtimes: seconds per 512x512 slice, and a 300-slice CT study end to end.

    python benchmarks/cpu_inference.py                       # the tables below: 15-20 min on 2 shared cores
    python benchmarks/cpu_inference.py --dice                # + validation Dice per bundle, fp32/bf16/int8
    python benchmarks/cpu_inference.py --out docs/cpu_inference.md

1. **Per slice**: real CT slices (the JPEG 2000 series ``ct_dicom_totalseg``, liver bundle preprocessing) through
   each path, ``--batch-size`` slices per call, after one untimed call; the median of ``--repeats`` runs over
   ``--slices`` slices. Paths: torch eager (the reference ``segment`` ran before this work), torch on the fused
   inference form (:func:`pyconv_monai.runtime.fuse_for_inference`, BN folded), and the ONNX export
   (:func:`pyconv_monai.runtime.export_onnx`) in ONNX Runtime and OpenVINO (fp32, bf16 where the CPU has it, and
   int8). PyConvU-Net uses the liver bundle's trained weights and its int8 calibration record
   (``models/model_int8.json``, what the bundle runs); U-Net (``get_network("unet")``) fresh weights (seed 0: speed
   does not depend on them), calibrated here on 8 slices of the same series. Each row also gives the setup time
   (export and compile), the largest logit difference from torch eager and the share of mask pixels equal to torch
   eager's.
2. **End to end**: a 300-slice study built from the real 20-slice series (15 copies of its files, each shifted along
   the slice normal by the series' extent, with new SOP instance UIDs, in a temporary folder; the pixel data stays
   JPEG 2000) segmented by the liver bundle's ``inference.json`` (as ``pyconv-monai segment``: DICOM decoding,
   inference, NIfTI, DICOM SEG and ``volumes.csv`` written) with each runtime of ``--study-runtimes``; wall seconds
   from the call to the written CSV, export and compilation included.
3. With ``--dice``: each bundle's validation slices (its ``train.json`` split, from ``../shared/data``) through
   OpenVINO fp32, ONNX Runtime fp32, OpenVINO bf16 and int8 on both runtimes (the bundle's calibration record): mean
   Dice of each, the largest change against fp32, and the pixels where the bf16 masks differ. A lossy precision is
   acceptable for a bundle only when its Dice changes by <= 0.002.
"""

from __future__ import annotations

import argparse
import csv
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation
from pydicom.uid import generate_uid

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.cli import segment
from pyconv_monai.data import DicomSeriesReader
from pyconv_monai.networks import get_network
from pyconv_monai.runtime import (
    OnnxRuntimeNetwork,
    available_runtimes,
    calibrate_network,
    export_onnx,
    fuse_for_inference,
    quantize_qdq,
    read_calibration,
    select_runtime,
)
from pyconv_monai.runtime.backends import DEFAULT_FUSE_MODE, int8_runs_here, openvino_has_bf16
from pyconv_monai.transforms import CTWindow
from pyconv_monai.workflows.quantize import CALIBRATION_FILE, mean_dice, run_batched, split_slices, training_config

from benchmarks.common import REPO, command_line, markdown_table, print_and_write, shared_data
from benchmarks.machine import cpu_cores, cpu_features, cpu_model, load_average

BUNDLES = ("lung_ct_segmentation", "liver_ct_segmentation", "neuron_em_segmentation")
LAYOUT_FOLDER = {"lung_ct_2d": "lung_ct_2d", "liver_ct_2d": "liver_ct_2d", "isbi2012_em": "isbi2012_em"}


def machine(threads: int) -> str:
    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("onnxruntime", "openvino"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            versions.append(f"{name} not installed")
    return (
        f"CPU: {cpu_model()} ({cpu_features()}), {cpu_cores()} core(s) usable, {threads} thread(s) per runtime; "
        f"load average before the run (1/5/15 min): {load_average()}; {', '.join(versions)}"
    )


def ct_slices(series: Path, count: int) -> torch.Tensor:
    """``count`` real CT slices ``(count, 1, H, W)`` with the liver bundle's preprocessing (orientation, window)."""
    reader = DicomSeriesReader()
    array, meta = reader.get_data(reader.read(str(series)))
    volume = MetaTensor(torch.as_tensor(array)[None], affine=torch.as_tensor(meta["affine"]))
    array = Orientation(axcodes="ALS", labels=None)(volume).as_tensor()[0].numpy()  # as the bundle's orientation
    image = CTWindow(None, window=500, level=150)(torch.as_tensor(np.ascontiguousarray(array))[None]).float()
    idx = np.linspace(0, image.shape[-1] - 1, count).round().astype(int)
    return image[0][..., idx].permute(2, 0, 1)[:, None].contiguous()


def _calibration(args: argparse.Namespace, name: str, net: torch.nn.Module, mode: str) -> object | None:
    """PyConvU-Net: the bundle's shipped int8 record (made for the default fusion); U-Net: calibrated here."""
    if name == "pyconvunet":
        path = REPO / "bundles" / args.bundle / "models" / CALIBRATION_FILE
        return path if mode in ("auto", DEFAULT_FUSE_MODE) and path.is_file() else None
    return calibrate_network(net, list(ct_slices(Path(args.series), 8)), mode)


def per_slice_rows(args: argparse.Namespace, x: torch.Tensor) -> list[dict]:
    rows = []
    found = available_runtimes()
    for name in args.networks:
        torch.manual_seed(0)
        net = get_network(name).eval()
        if name == "pyconvunet":
            state = torch.load(REPO / "bundles" / args.bundle / "models" / "model.pt", map_location="cpu",
                               weights_only=True)  # fmt: skip
            net.load_state_dict(state)
        paths: list[tuple[str, Callable[[], torch.nn.Module]]] = [("torch eager (reference)", lambda: net)]
        if name == "pyconvunet":
            fused = f"torch, fused {args.torch_mode} + BN folded"
            paths.append((fused, lambda: fuse_for_inference(net, args.torch_mode)))
        modes = args.modes if name == "pyconvunet" else ["reference"]  # networks without PyConvs: one export
        for mode in modes:
            calibration = _calibration(args, name, net, mode) if "onnxruntime" in found else None
            for runtime, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
                                       ("openvino", "bf16"), ("openvino", "int8")):  # fmt: skip
                if (
                    runtime in found
                    and (precision != "int8" or calibration is not None)
                    and _runs_here(runtime, precision)
                ):
                    label = f"{runtime} {precision}" + (f", fused {mode}" if len(modes) > 1 else "")
                    paths.append(
                        (label, lambda r=runtime, p=precision, m=mode, c=calibration: select_runtime(
                            net, r, "cpu", precision=p, mode=m, threads=args.threads, cache_dir="off", calibration=c))
                    )  # fmt: skip
        reference = None
        for label, build in paths:
            start = time.perf_counter()
            runner = build()
            setup = time.perf_counter() - start
            run_batched(runner, x[: args.batch_size], args.batch_size)  # warm-up
            times, cpu, out = [], [], None
            for _ in range(args.repeats):
                start, cpu_start = time.perf_counter(), time.process_time()
                out = run_batched(runner, x, args.batch_size)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)
            if reference is None:
                reference = out
            diff = (out - reference).abs().max().item()
            agree = ((out > 0) == (reference > 0)).float().mean().item()
            per = statistics.median(times) / len(x)
            cpu_per = statistics.median(cpu) / len(x)
            rows.append({"network": name, "path": label, "setup_s": setup, "s_per_slice": per, "cpu_per_slice": cpu_per,
                         "diff": diff, "agree": agree})  # fmt: skip
            print(f"  {name:10s} {label:32s} {per:.3f} s/slice (setup {setup:.1f} s)", file=sys.stderr, flush=True)
    return rows


def build_study(series: Path, copies: int, dst: Path) -> int:
    """Write ``copies`` shifted copies of a DICOM series into ``dst`` as one series; returns the slice count."""
    files = sorted(p for p in series.iterdir() if p.is_file())
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    order = np.argsort([float(h.ImagePositionPatient[2]) for h in headers])
    z = np.array([float(headers[i].ImagePositionPatient[2]) for i in order])
    step = float(np.median(np.diff(z))) if len(z) > 1 else 1.0
    extent = step * len(z)
    n = 0
    for c in range(copies):
        for rank, i in enumerate(order):
            ds = pydicom.dcmread(files[i])
            pos = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + c * extent]
            ds.InstanceNumber = c * len(files) + rank + 1
            uid = generate_uid(entropy_srcs=[str(dst), str(c), files[i].name])
            ds.SOPInstanceUID = uid
            ds.file_meta.MediaStorageSOPInstanceUID = uid
            ds.save_as(dst / f"{c:03d}_{files[i].name}", enforce_file_format=True)
            n += 1
    return n


def study_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study"
        study.mkdir()
        copies = max(1, -(-args.study_slices // len(list(Path(args.series).iterdir()))))
        n = build_study(Path(args.series), copies, study)
        for runtime in args.study_runtimes:
            out = Path(tmp) / f"out_{runtime}"
            overrides = {"runtime": runtime, "device": "cpu", "progress": False, "batch_size": args.batch_size,
                         "runtime_options": {"threads": args.threads}}  # fmt: skip
            start, cpu_start = time.perf_counter(), time.process_time()
            segment(study, out, args.bundle, overrides, configure_logging=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            with open(out / "volumes.csv", newline="") as f:
                row = next(csv.DictReader(f), {})
            rows.append({"runtime": runtime, "slices": n, "seconds": seconds, "cpu_s": cpu, "status": row.get("status"),
                         "volume_ml": row.get("volume_ml")})  # fmt: skip
            print(f"  study {runtime}: {seconds:.1f} s for {n} slices", file=sys.stderr, flush=True)
    return rows


def dice_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for bundle in BUNDLES:
        root = REPO / "bundles" / bundle
        parser = training_config(root)
        parser["dataset_dir"] = str(shared_data() / LAYOUT_FOLDER[parser["layout"]])
        x, y = split_slices(parser, parser.get_parsed_content("val_datalist"))
        net = get_network("pyconvunet").eval()
        net.load_state_dict(torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True))
        logits = {}
        calibration = root / "models" / CALIBRATION_FILE
        runs = (("fp32", "openvino", "fp32"), ("ort", "onnxruntime", "fp32"), ("bf16", "openvino", "bf16"),
                ("ov_int8", "openvino", "int8"), ("ort_int8", "onnxruntime", "int8"))  # fmt: skip
        forced = []
        for label, runtime, precision in runs:
            if (precision == "int8" and not calibration.is_file()) or (precision == "bf16" and not openvino_has_bf16()):
                continue
            if precision == "int8" and not int8_runs_here(runtime):
                # select_runtime refuses it on this CPU; run it directly to show why (the Dice table's note)
                size, record = tuple(x.shape[2:]), read_calibration(calibration)
                model = quantize_qdq(export_onnx(net, None, record["mode"], size), record["ranges"])
                runner = OnnxRuntimeNetwork(net, model, size, args.threads, "int8, run directly")
                forced.append(label)
            else:
                runner = select_runtime(net, runtime, "cpu", precision=precision, threads=args.threads,
                                        size=tuple(x.shape[2:]), cache_dir="off", calibration=calibration)  # fmt: skip
            logits[label] = run_batched(runner, x, args.batch_size)
        score = {k: mean_dice(v, y) for k, v in logits.items()}
        differ = ((logits["fp32"] > 0) != (logits["bf16"] > 0)).float().mean().item() if "bf16" in logits else None
        rows.append({"bundle": bundle, "slices": len(x), "dice": score, "differ": differ, "forced": forced})
        print(f"  {bundle}: Dice " + ", ".join(f"{k} {v:.4f}" for k, v in score.items()), file=sys.stderr, flush=True)
    return rows


def _runs_here(runtime: str, precision: str) -> bool:
    """Whether ``select_runtime`` runs ``runtime`` in ``precision`` on this CPU (bf16 needs bfloat16 units, elsewhere
    OpenVINO runs fp32; ONNX Runtime's int8 is refused on x86 without VNNI, where it saturates)."""
    if precision == "bf16":
        return openvino_has_bf16()
    return precision != "int8" or int8_runs_here(runtime)


def _change(dice: dict[str, float]) -> float:
    """The largest change of a lossy precision's Dice against OpenVINO fp32's."""
    return max(abs(dice["fp32"] - v) for k, v in dice.items() if k not in ("fp32", "ort"))


def _ml(value: object) -> str:
    """A volume of ``volumes.csv`` (text, empty when there is none) with one decimal."""
    return f"{float(value):.1f}" if value not in (None, "") else ""


def report(args: argparse.Namespace, host: str, slices: list[dict], study: list[dict], scores: list[dict]) -> str:
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {host}.",
        "",
        f"Per slice: {args.slices} real 512x512 CT slices (`{Path(args.series).name}`, liver preprocessing), batch "
        f"{args.batch_size}, median of {args.repeats} runs after one warm-up call. Setup = export + compile. Agree = "
        "mask pixels equal to torch eager's. CPU s / slice = the process's CPU time per slice over all its threads: "
        f"on a machine shared with other jobs, CPU s / slice ÷ {args.threads} estimates the idle wall time better "
        "than the wall time does.",
        "",
    ]
    base = {r["network"]: r["s_per_slice"] for r in slices if r["path"].startswith("torch eager")}
    lines += markdown_table(
        ("network", "path", "s / slice", "× torch eager", "CPU s / slice", "setup s", "max logit diff", "agree"),
        "llrrrrrr",
        [(r["network"], r["path"], f"{r['s_per_slice']:.3f}", f"{base[r['network']] / r['s_per_slice']:.1f}",
          f"{r['cpu_per_slice']:.3f}", f"{r['setup_s']:.1f}", f"{r['diff']:.1e}", f"{100 * r['agree']:.3f} %")
         for r in slices],
    )  # fmt: skip
    if study:
        lines += [
            "",
            f"End to end: {study[0]['slices']}-slice study ({args.study_slices} requested; copies of the real JPEG "
            f"2000 series), `{args.bundle}` inference.json, DICOM decode + inference + NIfTI + DICOM SEG + CSV; batch "
            f"{args.batch_size}.",
            "",
        ]
        lines += markdown_table(
            ("runtime", "slices", "seconds", "s / slice", "CPU s", "status", "volume mL"),
            "lrrrrlr",
            [(r["runtime"], r["slices"], f"{r['seconds']:.1f}", f"{r['seconds'] / r['slices']:.3f}",
              f"{r['cpu_s']:.0f}", r["status"], _ml(r["volume_ml"])) for r in study],
        )  # fmt: skip
    if scores:
        lines += [
            "",
            "Validation Dice (each bundle's whole validation set: its train.json 80/20 split of `../shared/data`; "
            "fp32 = OpenVINO fp32, ORT = ONNX Runtime fp32, bf16 = OpenVINO bf16, int8 = the bundle's "
            "models/model_int8.json on each runtime, each with select_runtime's default PyConv fusion, i.e. what a "
            "bundle runs); a lossy precision is allowed only where its Dice changes by <= 0.002 against fp32 (either "
            "way); pixels differing: bf16 against fp32 masks (bf16 columns empty on a CPU without bfloat16 units):",
            "",
        ]
        names = (("fp32", "fp32"), ("ort", "ORT fp32"), ("bf16", "bf16"), ("ov_int8", "OpenVINO int8"),
                 ("ort_int8", "ORT int8"))  # fmt: skip
        lines += markdown_table(
            ("bundle", "slices", *(f"Dice {title}" for _, title in names), "largest change", "pixels differing",
             "lossy allowed"),
            "lrrrrrrrrl",
            [(r["bundle"], r["slices"], *(f"{r['dice'][k]:.5f}" if k in r["dice"] else "" for k, _ in names),
              f"{_change(r['dice']):.5f}", "" if r["differ"] is None else f"{100 * r['differ']:.3f} %",
              "yes" if _change(r["dice"]) <= 0.002 else "no")
             for r in scores],
        )  # fmt: skip
        forced = sorted({k for r in scores for k in r.get("forced", ())})
        if forced:
            titles = ", ".join(title for k, title in names if k in forced)
            note = (
                f"{titles}: run directly, because `select_runtime` refuses it on this CPU (x86 without VNNI, "
                "where ONNX Runtime's int8 products saturate); a bundle runs OpenVINO int8 or fp32 here."
            )
            lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", default=str(shared_data() / "ct_dicom_totalseg" / "dicom"), help="DICOM series")
    parser.add_argument("--bundle", default="liver_ct_segmentation", help="bundle of the weights and the study run")
    parser.add_argument("--networks", default="pyconvunet,unet", type=lambda s: s.split(","))
    parser.add_argument("--slices", type=int, default=8, help="slices timed per path")
    parser.add_argument("--batch-size", type=int, default=4, help="slices per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path (median)")
    parser.add_argument("--threads", type=int, default=2, help="threads of torch and the runtimes")
    parser.add_argument("--torch-mode", default="dense", help="PyConv plan of the fused torch row")
    parser.add_argument(
        "--modes",
        default="auto",
        type=lambda s: s.split(","),
        help="PyConv fusions of the exported PyConvU-Net to time, e.g. reference,ungrouped,dense "
        "(auto: select_runtime's choice per runtime and precision)",
    )
    parser.add_argument("--study-slices", type=int, default=300, help="slices of the end-to-end study (0: skip)")
    parser.add_argument("--study-runtimes", default="auto,onnxruntime", type=lambda s: [r for r in s.split(",") if r])
    parser.add_argument("--dice", action="store_true", help="also measure validation Dice, fp32 against bf16, int8")
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    host = machine(args.threads)
    x = ct_slices(Path(args.series), args.slices)
    slices = per_slice_rows(args, x)
    study = study_rows(args) if args.study_slices > 0 else []
    scores = dice_rows(args) if args.dice else []
    table = report(args, host, slices, study, scores)
    print_and_write(table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
