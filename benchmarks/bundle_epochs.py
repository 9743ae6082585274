#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Seconds per epoch of a bundle's own training (its ``train.json``: data, augmentation, AMP, validation every
epoch, checkpoints), for several networks in turn on the same device: a few measured epochs, not the 50.

    python benchmarks/bundle_epochs.py --bundle liver_ct_segmentation --dataset_dir ../shared/data/liver_ct_2d \
        --models unet,pyconvunet:ungrouped --epochs 3 --out epochs.md --json epochs.json

Each model is ``name`` or ``name:pyconv_mode``; the mode goes to the bundle's ``pyconv_mode`` key where the config
has one, else the ``network`` entry is overridden with ``optimize_pyconv``. Every epoch is timed from its start to
the end of its validation and checkpointing (an ignite handler attached after the bundle's own); the first epoch
(CacheDataset already filled, but cuDNN's search happens there) is reported apart, and the
50-epoch figure is an extrapolation: first epoch + 49 x median of the others. ``--subset N`` keeps N training and
N validation slices and ``--patch`` crops them (CPU dry runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, command_line, markdown_table, write_text

__all__ = ["time_bundle_epochs", "format_table", "main"]


def _overrides(config: dict[str, Any], spec: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    name, _, mode = spec.partition(":")
    over: dict[str, Any] = {
        "dataset_dir": str(Path(args.dataset_dir).resolve()),
        "epochs": args.epochs,
        "network_name": name,
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "eval"),
        "progress": False,
        "log_images": False,
        "resume": False,
    }
    if args.batch_size:
        over["batch_size"] = args.batch_size
    if mode:
        if "pyconv_mode" in config:
            over["pyconv_mode"] = mode
        else:
            over["network"] = f"$pyconv_monai.networks.optimize_pyconv(@network_def, {mode!r}).to(@device)"
    if args.subset:
        over["train_datalist"] = f"$@split[0][:{args.subset}]"
        over["val_datalist"] = f"$@split[1][:{args.subset}]"
    if args.patch:
        over["train_patch_size"] = [args.patch, args.patch]
    return over


def time_bundle_epochs(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``spec`` with the bundle's ``train.json`` for ``args.epochs`` epochs; the seconds of each epoch."""
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    config_file = REPO / "bundles" / args.bundle / "configs" / "train.json"
    with tempfile.TemporaryDirectory(prefix="bundle-epochs-") as tmp:
        parser = ConfigParser()
        parser.read_config(str(config_file))
        for key, value in _overrides(parser.config, spec, args, Path(tmp)).items():
            parser[key] = value
        parser.parse()
        t0 = time.perf_counter()
        parser.get_parsed_content("initialize", lazy=False)
        trainer = parser.get_parsed_content("train#trainer")
        from collections import Counter

        from pyconv_monai.networks import pyconv_modes

        modes = dict(Counter(pyconv_modes(parser.get_parsed_content("network")).values()))
        setup_s = time.perf_counter() - t0
        stamps: list[float] = []
        device = torch.device(parser.get_parsed_content("device"))

        def stamp(_engine: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())

        trainer.add_event_handler(Events.EPOCH_STARTED, stamp)
        trainer.add_event_handler(Events.COMPLETED, stamp)  # after the last epoch's validation and checkpoint
        trainer.run()
        epochs = [b - a for a, b in zip(stamps, stamps[1:])]
        metric = trainer.state.metrics.get("val_mean_dice") if hasattr(trainer.state, "metrics") else None
        best = getattr(parser.get_parsed_content("validate#evaluator").state, "best_metric", None)
    later = epochs[1:] or epochs
    return {
        "model": spec,
        "train_slices": len(parser.get_parsed_content("train_datalist")),
        "val_slices": len(parser.get_parsed_content("val_datalist")),
        "batch_size": parser.get_parsed_content("batch_size"),
        "setup_s": setup_s,
        "pyconv_modes": modes,
        "epoch_s": epochs,
        "first_s": epochs[0] if epochs else None,
        "median_later_s": statistics.median(later) if later else None,
        "extrapolated_50_s": (epochs[0] + 49 * statistics.median(later)) if epochs else None,
        "best_val_dice": best,
        "last_metric": metric,
    }


def format_table(rows: list[dict[str, Any]], header: str) -> str:
    """Markdown: one row per model, ratios to the first."""
    columns = ("model", "PyConv modes", "train/val slices", "batch", "setup s", "epoch 1 s", "later epochs s (median)",
               "× first model", "50 epochs s (extrapolated)", "best val Dice")  # fmt: skip
    base = rows[0].get("median_later_s") if rows else None
    cells = []
    for r in rows:
        if "error" in r:
            cells.append((r["model"], r["error"][:120], *[""] * 8))
            continue
        ratio = f"{r['median_later_s'] / base:.2f}" if base and r.get("median_later_s") else "–"
        later = ", ".join(f"{s:.2f}" for s in r["epoch_s"][1:])
        best = "–" if r.get("best_val_dice") is None else f"{r['best_val_dice']:.4f}"
        modes = ", ".join(f"{k}×{v}" for k, v in r["pyconv_modes"].items()) or "–"
        cells.append((r["model"], modes, f"{r['train_slices']}/{r['val_slices']}", r["batch_size"],
                      f"{r['setup_s']:.1f}", f"{r['first_s']:.2f}", f"{later} ({r['median_later_s']:.2f})", ratio,
                      f"{r['extrapolated_50_s']:.0f}", best))  # fmt: skip
    return "\n".join([header, "", *markdown_table(columns, "llrrrrrrrr", cells)]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="liver_ct_segmentation")
    p.add_argument("--dataset_dir", required=True, help="the bundle's data set (always explicit)")
    p.add_argument("--models", default="unet,pyconvunet", help="comma-separated name[:pyconv_mode]")
    p.add_argument("--epochs", type=int, default=3, help="epochs per model (the first is reported apart)")
    p.add_argument("--batch-size", type=int, help="default: the bundle's (5, the paper's)")
    p.add_argument("--subset", type=int, help="keep this many training and validation slices (dry runs)")
    p.add_argument("--patch", type=int, help="train on random crops of this size (dry runs)")
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args(argv)
    import monai
    import torch

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    header = (
        f"**{args.bundle}, {dev}** (torch {torch.__version__}, MONAI {monai.__version__}; "
        f"`{command_line(['benchmarks/bundle_epochs.py', *(sys.argv[1:] if argv is None else argv)])}`); each epoch "
        "= training + validation + checkpoints of the bundle's train.json; 50 epochs = epoch 1 + 49 × median later"
    )
    rows: list[dict[str, Any]] = []
    text = ""
    for spec in [m.strip() for m in args.models.split(",") if m.strip()]:
        t0 = time.time()
        try:
            rows.append(time_bundle_epochs(spec, args))
        except Exception as e:  # noqa: BLE001 - one failing model keeps the others' rows
            import traceback

            traceback.print_exc()
            rows.append({"model": spec, "error": f"{type(e).__name__}: {e}".replace("|", "/").replace("\n", " ")})
        print(f"[{spec}] {time.time() - t0:.0f} s: {rows[-1]}", file=sys.stderr, flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        text = format_table(rows, header)
        for path, content in ((args.out, text), (args.json, json.dumps({"header": header, "rows": rows}, indent=1))):
            if path:  # after every model: a run stopped from outside keeps the rows it has
                write_text(path, content)
    print(text)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
