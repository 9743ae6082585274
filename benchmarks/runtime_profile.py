#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Where a CPU runtime spends the time of one 512x512 slice: per-layer profiles of PyConvU-Net and U-Net.

    python benchmarks/runtime_profile.py --out /tmp/profile.md                 # OpenVINO fp32 + bf16, ONNX Runtime
    python benchmarks/runtime_profile.py --modes reference,ungrouped,dense     # the PyConv fusions of the export
    python benchmarks/runtime_profile.py --networks pyconvunet --modes reference,ungrouped,dense,width --units

For each network (PyConvU-Net with the liver bundle's weights, U-Net fresh) and each path, the exported ONNX model
(:func:`pyconv_monai.runtime.export_onnx`) runs ``--repeats`` profiled calls of one real CT slice after a warm-up:
OpenVINO with ``PERF_COUNT`` (``get_profiling_info``: real time per executed node, and the kernel it ran) and ONNX
Runtime with ``enable_profiling`` (the ``Node`` events' durations). Tables: time by operator type (share of the
slice), and the ``--top`` layers with their output shape (channels x height x width, from ONNX shape inference)
and the kernel. ``--units``: PyConvU-Net's node time summed per "PyConv, norm, activation" unit, each fusion side
by side, with the fastest and the plan the ``"width"`` fusion takes (:data:`pyconv_monai.runtime.WIDTH_RULE`, chosen
from this table). Paired in one process: on a shared machine read the shares and ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.networks import get_network
from pyconv_monai.networks.blocks.pyconv import PyConvNormAct
from pyconv_monai.runtime import export_onnx, width_plan_mode

from benchmarks.common import REPO, command_line, markdown_table, print_and_write, shared_data
from benchmarks.cpu_inference import ct_slices, machine

__all__ = ["profile_openvino", "profile_onnxruntime", "unit_times", "main"]


def _shapes(model: bytes) -> dict[str, str]:
    """ONNX node name -> its first output's shape as ``CxHxW`` (batch dropped), by ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(onnx.load_from_string(model))
    dims = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        d = [x.dim_value for x in v.type.tensor_type.shape.dim]
        dims[v.name] = "x".join(str(x) for x in d[1:]) if d else ""
    return {n.name: dims.get(n.output[0], "") for n in inferred.graph.node if n.output}


def profile_openvino(model: bytes, x: np.ndarray, precision: str, threads: int, repeats: int) -> list[dict]:
    """Per-node real time (ms, median over ``repeats`` calls) of OpenVINO on the CPU with ``PERF_COUNT``."""
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True,
              "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16"}  # fmt: skip
    request = core.compile_model(core.read_model(model=model, weights=b""), "CPU", config).create_infer_request()
    request.infer({0: x})
    times: dict[str, list[float]] = collections.defaultdict(list)
    info: dict[str, tuple[str, str]] = {}
    for _ in range(repeats):
        request.infer({0: x})
        for p in request.get_profiling_info():
            if p.status == p.Status.EXECUTED:
                times[p.node_name].append(p.real_time.total_seconds() * 1e3)
                info[p.node_name] = (p.node_type, p.exec_type)
    return [{"node": n, "type": info[n][0], "kernel": info[n][1], "ms": float(np.median(t))} for n, t in times.items()]


def profile_onnxruntime(model: bytes, x: np.ndarray, threads: int, repeats: int) -> list[dict]:
    """Per-node time (ms, median over ``repeats`` calls) of ONNX Runtime's CPU provider with profiling on."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: x})
        for _ in range(repeats):
            session.run(None, {name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    times: dict[str, list[float]] = collections.defaultdict(list)
    kinds: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            times[node].append(e["dur"] / 1e3)
            kinds[node] = e.get("args", {}).get("op_name", "")
    # the first call after creation is the warm-up: keep the last ``repeats`` durations of each node
    return [{"node": n, "type": kinds[n], "kernel": kinds[n], "ms": float(np.median(t[-repeats:]))}
            for n, t in times.items()]  # fmt: skip


def _base(node: str) -> str:
    """The ONNX node a runtime node came from (OpenVINO and ONNX Runtime append suffixes to fused nodes)."""
    for sep in ("/WithoutBiases", "_fused", "/fq_weights", "_output"):
        node = node.split(sep)[0]
    return node


def unit_times(rows: list[dict], units: list[str]) -> dict[str, float]:
    """Node time summed per unit (a module name such as ``decoder.3.unit1``; ``"other"`` for the rest), in ms.

    The exported nodes are named after their modules (``/decoder.3/unit1/parts.0/Conv``); a runtime node belongs to
    the longest unit name on its path.
    """
    longest_first = sorted(units, key=len, reverse=True)
    out: dict[str, float] = collections.Counter()
    for r in rows:
        path = "/" + r["node"].replace(".", "/") + "/"
        unit = next((u for u in longest_first if "/" + u.replace(".", "/") + "/" in path), "other")
        out[unit] += r["ms"]
    return dict(out)


def report_rows(rows: list[dict], shapes: dict[str, str], top: int) -> tuple[list[tuple], list[tuple], float]:
    total = sum(r["ms"] for r in rows) or 1.0
    by_type: dict[str, float] = collections.Counter()
    for r in rows:
        by_type[r["type"]] += r["ms"]
    types = [(t, f"{ms:.1f}", f"{100 * ms / total:.1f} %") for t, ms in sorted(by_type.items(), key=lambda kv: -kv[1])]
    layers = [(f"`{r['node'][:70]}`", r["type"], r["kernel"], shapes.get(_base(r["node"]), ""), f"{r['ms']:.2f}",
               f"{100 * r['ms'] / total:.1f} %") for r in sorted(rows, key=lambda r: -r["ms"])[:top]]  # fmt: skip
    return types, layers, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="liver_ct_segmentation", help="bundle of the PyConvU-Net weights")
    parser.add_argument("--series", default=str(shared_data() / "ct_dicom_totalseg" / "dicom"))
    parser.add_argument("--networks", default="pyconvunet,unet", type=lambda s: s.split(","))
    parser.add_argument("--modes", default="reference", type=lambda s: s.split(","), help="PyConv fusions to profile")
    parser.add_argument("--paths", default="openvino:fp32,openvino:bf16,onnxruntime:fp32",
                        type=lambda s: [tuple(p.split(":")) for p in s.split(",")])  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--units", action="store_true", help="PyConvU-Net's time per unit, the fusions side by side")
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    x = np.ascontiguousarray(ct_slices(Path(args.series), 1).numpy())
    lines = [f"Command: `{command_line()}`", "", f"Machine: {machine(args.threads)}.", ""]
    totals = []
    per_unit: dict[str, dict[str, dict[str, float]]] = collections.defaultdict(dict)  # path -> fusion -> unit -> ms
    units: dict[str, int] = {}  # unit -> output channels
    for name in args.networks:
        torch.manual_seed(0)
        net = get_network(name).eval()
        if name == "pyconvunet":
            net.load_state_dict(torch.load(REPO / "bundles" / args.bundle / "models" / "model.pt", map_location="cpu",
                                           weights_only=True))  # fmt: skip
            units = {n: sum(m.conv.level_channels) for n, m in net.named_modules() if isinstance(m, PyConvNormAct)}
        for mode in args.modes if name == "pyconvunet" else ["reference"]:
            model = export_onnx(net, None, mode, tuple(x.shape[2:]))
            shapes = _shapes(model)
            for runtime, precision in args.paths:
                if runtime == "onnxruntime" and precision != "fp32":
                    continue
                if runtime == "openvino":
                    rows = profile_openvino(model, x, precision, args.threads, args.repeats)
                else:
                    rows = profile_onnxruntime(model, x, args.threads, args.repeats)
                types, layers, total = report_rows(rows, shapes, args.top)
                label = f"{name}" + (f" (fusion {mode})" if name == "pyconvunet" else "") + f", {runtime} {precision}"
                totals.append((label, f"{total:.0f}"))
                if name == "pyconvunet" and args.units:
                    per_unit[f"{runtime} {precision}"][mode] = unit_times(rows, list(units))
                print(f"  {label}: {total:.0f} ms of node time", file=sys.stderr, flush=True)
                lines += [f"### {label}: {total:.0f} ms summed over the nodes (one slice)", ""]
                lines += markdown_table(("operator", "ms", "share"), "lrr", types[:8]) + [""]
                lines += markdown_table(("layer", "type", "kernel", "output C x H x W", "ms", "share"), "lllrrr",
                                        layers) + [""]  # fmt: skip
    summary = ["Summed node time per slice:", ""] + markdown_table(("path", "ms"), "lr", totals) + [""]
    for path, by_mode in per_unit.items():
        modes = [m for m in by_mode if m != "width"]
        rows = []
        for unit in list(units) + ["other"]:
            ms = {m: by_mode[m].get(unit, 0.0) for m in by_mode}
            fastest = min(modes, key=lambda m: ms[m]) if unit != "other" and modes else ""
            rule = width_plan_mode(units[unit]) if unit in units else ""
            rows.append((f"`{unit}`", units.get(unit, ""), *(f"{ms[m]:.1f}" for m in by_mode), fastest, rule))
        rows.append(("**sum**", "", *(f"**{sum(by_mode[m].values()):.0f}**" for m in by_mode), "", ""))
        summary += [f"PyConvU-Net per unit, {path} (ms of node time, one slice):", ""]
        summary += markdown_table(("unit", "out channels", *by_mode, "fastest", "width rule"),
                                  "lr" + "r" * len(by_mode) + "ll", rows) + [""]  # fmt: skip
    print_and_write("\n".join(lines[:4] + summary + lines[4:]) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
