#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The paper's Table 2: six networks trained and evaluated on three data sets by driving the bundles.

Every cell of the matrix (model × data set) is one ``python -m monai.bundle run training`` of the data set's bundle
with command-line overrides (``--network_name``, epochs, batch size, seed, per-cell ``--ckpt_dir`` and
``--output_dir``), followed by the bundle's evaluation (``train.json`` + ``evaluate.json``: MONAI's ``MeanIoU`` over
background and foreground and ``MeanDice`` on the foreground) of the best checkpoint on the validation split.

    python benchmarks/table2.py run                      # the whole matrix, paper protocol (50 epochs, batch 5)
    python benchmarks/table2.py run --models unet,pyconvunet --datasets neuron_em_segmentation --budget 540
    python benchmarks/table2.py report                   # docs/table2.md and docs/figures/table2_*.png
    python benchmarks/table2.py curves --dataset neuron_em_segmentation --out curves.png   # one cell's curves

Results are appended per cell to ``<results-dir>/results.jsonl``; a finished cell is skipped, a cell that was
stopped (``--deadline``, a killed process) resumes from its last epoch checkpoint with the bundles'
``--resume true``. ``--budget`` stops starting new cells after that many seconds, so that a device limited to
10-minute commands does the matrix over several calls. Each cell keeps its TensorBoard events (``eval/``), its
per-epoch history (``history.csv``: training loss, validation MIoU and Dice), the final evaluation's CSVs
(``final/``) and the prediction of one validation case (``prediction.npz``) for the figures.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, command_line, shared_data
from benchmarks.table2_figures import plot_cell_curves
from benchmarks.table2_protocol import DATASETS, MODELS, PROTOCOL, log
from benchmarks.table2_report import write_report
from benchmarks.table2_run import run_matrix

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line of ``run``, ``report`` and ``curves``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate the selected cells (resumable)")
    r.add_argument("--models", help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    r.add_argument("--datasets", help=f"comma-separated subset of {','.join(DATASETS)} (default: all)")
    r.add_argument("--epochs", type=int, default=PROTOCOL["epochs"], help="training epochs (paper: 50)")
    r.add_argument("--batch-size", type=int, default=PROTOCOL["batch_size"], help="batch size (paper: 5)")
    r.add_argument("--seed", type=int, default=0, help="seed of the split and of training (default 0)")
    r.add_argument("--patch-size", type=int, help="train on random square patches of this size (default: whole)")
    r.add_argument("--image-size", type=int, help="smoke runs: resize images and masks to this square size")
    r.add_argument("--train-subset", type=int, help="smoke runs: only the first N training cases of the split")
    r.add_argument("--val-subset", type=int, help="smoke runs: only the first N validation cases of the split")
    r.add_argument(
        "--override", nargs=2, action="append", metavar=("KEY", "VALUE"), help="any bundle override, e.g. "
        "--override learning_rate 3e-4 (part of the setting)"
    )  # fmt: skip
    r.add_argument("--device", choices=("cpu", "cuda"), help="force a device (default: the bundle's, GPU if any)")
    r.add_argument("--data-root", default=str(shared_data()), help="folder holding the data sets' folders")
    r.add_argument("--results-dir", default=str(REPO / "runs" / "table2"), help="results folder (default runs/table2)")
    r.add_argument("--budget", type=float, help="start no new cell after this many seconds")
    r.add_argument("--jobs", type=int, default=1, help="cells run at a time (they share the device; default 1)")
    r.add_argument("--deadline", type=float, help="stop a running cell after this many seconds (it resumes later)")
    r.add_argument("--allow-partial-data", action="store_true", help="train on a data set with missing cases")
    r.add_argument("--retry-failed", action="store_true", help="run cells again whose last attempt failed")
    r.add_argument("--parent-command", help=argparse.SUPPRESS)  # set by --jobs for its child processes
    r.add_argument("--parent-jobs", type=int, help=argparse.SUPPRESS)
    s = sub.add_parser("report", help="write docs/table2.md and the figures from a results folder")
    s.add_argument("--results-dir", default=str(REPO / "runs" / "table2"))
    s.add_argument("--out", default=str(REPO / "docs" / "table2.md"))
    s.add_argument("--figures", default=str(REPO / "docs" / "figures"))
    s.add_argument("--note", help="a paragraph to put under the title (status, caveats)")
    c = sub.add_parser("curves", help="training curves of one cell as a PNG (e.g. for a bundle's docs)")
    c.add_argument("--results-dir", default=str(REPO / "runs" / "table2"))
    c.add_argument("--model", default="pyconvunet", choices=MODELS)
    c.add_argument("--dataset", required=True, choices=list(DATASETS))
    c.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    raw = sys.argv[1:] if argv is None else list(argv)
    args.runner_command = command_line(["benchmarks/table2.py", *raw])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.command == "curves":
        plot_cell_curves(Path(args.results_dir), args.model, args.dataset, Path(args.out))
        log(f"wrote {args.out}")
        return 0
    if args.command == "report":
        write_report(Path(args.results_dir), Path(args.out), Path(args.figures), args.note)
        log(f"wrote {args.out} and {args.figures}/table2_*.png")
        return 0
    # stopped from outside (e.g. `timeout`): unwind so that the running cell's process group is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run_matrix(args)


if __name__ == "__main__":
    sys.exit(main())
