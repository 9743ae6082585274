# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The Table 2 matrix: which cells to run (finished ones are skipped, data sets without their data too), in this
process one after another or in ``--jobs`` child processes, within the time budget and the deadline."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import REPO
from benchmarks.table2_cell import environment, run_cell, stop_process
from benchmarks.table2_evaluate import count_cases
from benchmarks.table2_protocol import DATASETS, MODELS, log, settings_from_args
from benchmarks.table2_results import check_settings, read_results

__all__ = ["EXIT_STOPPED", "data_ready", "run_matrix"]


def _names(text: str | None, known: Sequence[str], what: str) -> list[str]:
    if not text:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {', '.join(known)}.")
    return names


def data_ready(args: argparse.Namespace, dataset: str) -> bool:
    """Whether the data set's folder under ``--data-root`` holds the whole set (or any, with --allow-partial-data)."""
    ds = DATASETS[dataset]
    data_dir = Path(args.data_root) / ds.folder
    try:
        cases = count_cases(data_dir, dataset)
    except (ValueError, OSError) as e:
        log(f"{ds.label}: skipped, no usable data at {data_dir}: {e}")
        return False
    if cases != ds.cases and not (args.allow_partial_data and cases > 0):
        log(f"{ds.label}: skipped, {data_dir} holds {cases} of its {ds.cases} cases (partly staged?)")
        return False
    return True


EXIT_STOPPED = 75  # a cell was stopped at the deadline (resumable)


def _child_command(args: argparse.Namespace, model: str, dataset: str, seconds_left: float | None) -> list[str]:
    """``benchmarks/table2.py run`` for one cell with the same setting (``--jobs`` runs several at once)."""
    script = str(Path(__file__).resolve().with_name("table2.py"))
    cmd = [sys.executable, script, "run", "--models", model, "--datasets", dataset]
    for flag in ("epochs", "batch_size", "seed", "patch_size", "image_size", "train_subset", "val_subset", "device"):
        value = getattr(args, flag)
        if value is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(value)]
    for key, value in args.override or []:
        cmd += ["--override", key, value]
    cmd += ["--data-root", str(args.data_root), "--results-dir", str(args.results_dir)]
    cmd += ["--allow-partial-data"] * args.allow_partial_data + ["--retry-failed"] * args.retry_failed
    if seconds_left is not None:
        cmd += ["--deadline", f"{max(1.0, seconds_left):.0f}"]
    return cmd + ["--parent-command", args.runner_command, "--parent-jobs", str(args.jobs)]


def _run_pool(args: argparse.Namespace, todo: list[tuple[str, str]], start: float, deadline: float | None) -> dict:
    """Run the cells in ``--jobs`` child processes at a time; start none after ``--budget``."""
    outcomes: dict[str, int] = {}
    running: dict[subprocess.Popen, tuple[str, str]] = {}
    queue = list(todo)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        while queue or running:
            for proc in [p for p in running if p.poll() is not None]:
                running.pop(proc)
                outcome = {0: "done", EXIT_STOPPED: "stopped"}.get(proc.returncode, "failed")
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if queue and args.budget is not None and time.time() - start >= args.budget:
                log(f"time budget of {args.budget:.0f} s spent: {len(queue)} cell(s) not started")
                queue.clear()
            if queue and len(running) < args.jobs:
                model, dataset = queue.pop(0)
                left = None if deadline is None else deadline - time.time()
                cmd = _child_command(args, model, dataset, left)
                running[subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)] = (model, dataset)
                continue
            if deadline is not None and time.time() > deadline + 60:  # the children stop themselves before this
                for proc in running:
                    stop_process(proc)
            time.sleep(0.5)
    finally:
        for proc in running:
            stop_process(proc)
    return outcomes


def run_matrix(args: argparse.Namespace) -> int:
    """Run the selected cells in order (data set by data set), skipping finished ones, within the time budget.

    Returns:
        0, 1 when a cell failed, :data:`EXIT_STOPPED` when one was stopped at the deadline.
    """
    start = time.time()
    models = _names(args.models, MODELS, "models")
    datasets = _names(args.datasets, list(DATASETS), "datasets")
    settings = settings_from_args(args)
    results_dir = Path(args.results_dir)
    check_settings(results_dir, settings)
    finished = read_results(results_dir)
    deadline = start + args.deadline if args.deadline else None
    todo = []
    for dataset in datasets:
        cells = []
        for model in models:
            row = finished.get((model, dataset))
            if row and row["status"] == "ok":
                log(f"{DATASETS[dataset].label}/{model}: finished earlier (Dice {row['val_dice']:.4f}), skipped")
            elif row and row["status"] == "failed" and not args.retry_failed:
                log(f"{DATASETS[dataset].label}/{model}: failed earlier, skipped (--retry-failed runs it again)")
            else:
                cells.append((model, dataset))
        if cells and data_ready(args, dataset):
            todo += cells
    if not todo:
        log("nothing to do: every selected cell with data is finished")
        return 0
    if args.jobs > 1 and len(todo) > 1:
        log(f"{len(todo)} cell(s) to run, {args.jobs} at a time; results in {results_dir}")
        outcomes = _run_pool(args, todo, start, deadline)
    else:
        env = environment()
        log(f"{len(todo)} cell(s) to run on {env['gpu'] or 'CPU: ' + env['cpu']}; torch {env['torch']}, "
            f"MONAI {env['monai']}; results in {results_dir}")  # fmt: skip
        outcomes = {}
        for model, dataset in todo:
            if args.budget is not None and time.time() - start >= args.budget:
                log(f"time budget of {args.budget:.0f} s spent: {len(todo) - sum(outcomes.values())} cell(s) left")
                break
            outcome = run_cell(model, dataset, settings, args, env, deadline)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome == "stopped":
                break
    log(f"this run: {outcomes} in {time.time() - start:.0f} s")
    return 1 if outcomes.get("failed") else (EXIT_STOPPED if outcomes.get("stopped") else 0)
