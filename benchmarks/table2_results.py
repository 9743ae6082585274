# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The results folder of a Table 2 run: its setting (``settings.json``), one row per finished or failed cell
(``results.jsonl``), each cell's per-epoch history (``history.csv``) and per-image IoU (``final/val_miou_raw.csv``)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from benchmarks.table2_protocol import SETTING_KEYS

__all__ = [
    "HISTORY_FIELDS",
    "RESULTS",
    "SETTINGS",
    "append_result",
    "check_settings",
    "class_iou",
    "read_history",
    "read_results",
    "write_history",
]


RESULTS = "results.jsonl"
SETTINGS = "settings.json"
HISTORY_FIELDS = ("epoch", "train_loss", "val_miou", "val_mean_dice")


def check_settings(results_dir: Path, settings: dict[str, Any]) -> None:
    """Record the setting of a results folder on its first run; refuse to mix another setting into it.

    Raises:
        SystemExit: when the folder holds results of another setting.
    """
    path = results_dir / SETTINGS
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), settings.get(k)) for k in SETTING_KEYS if saved.get(k) != settings.get(k)}
        if diff:
            detail = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise SystemExit(f"{results_dir} holds results of another setting ({detail}); use another --results-dir.")
        return
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: settings[k] for k in SETTING_KEYS}, indent=1) + "\n")


def read_results(results_dir: Path) -> dict[tuple[str, str], dict]:
    """The last row of every (model, data set) in ``results.jsonl``."""
    rows: dict[tuple[str, str], dict] = {}
    path = results_dir / RESULTS
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(row["model"], row["dataset"])] = row
    return rows


def append_result(results_dir: Path, row: dict) -> None:
    """Append one row to ``results.jsonl`` (flushed to disk: the process may be killed right after)."""
    with open(results_dir / RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """Write a per-epoch history as CSV."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path) -> list[dict[str, float]]:
    """Read what :func:`write_history` wrote."""
    if not path.is_file():
        return []
    with open(path) as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def class_iou(final_dir: Path) -> dict[str, float] | None:
    """Background and foreground IoU of an evaluation, from the per-image CSV that the bundle's ``evaluate.json``
    writes (``val_miou_raw.csv``: one row per validation image, columns ``class0`` background, ``class1`` foreground).

    Args:
        final_dir: the evaluation's output folder (a cell's ``final/``).

    Returns:
        ``background``, ``foreground`` (each the mean over the images where it is defined) and ``miou`` (per image
        the mean of its defined classes, then the mean over images, as MONAI's ``MeanIoU`` reduces them), or None
        without that file.

    Raises:
        ValueError: when the file lacks the ``class0`` / ``class1`` columns (naming the file).
    """
    path = final_dir / "val_miou_raw.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"class0", "class1"} <= set(rows[0]):
        raise ValueError(f"{path}: expected per-image columns class0 (background) and class1 (foreground)")

    def mean(x: list[float]) -> float:
        x = [v for v in x if not math.isnan(v)]
        return sum(x) / len(x) if x else math.nan

    per_class = {c: [float(r[c]) for r in rows] for c in ("class0", "class1")}
    per_image = [mean([bg, fg]) for bg, fg in zip(per_class["class0"], per_class["class1"])]
    return {"background": mean(per_class["class0"]), "foreground": mean(per_class["class1"]), "miou": mean(per_image)}
