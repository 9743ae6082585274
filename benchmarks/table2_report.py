# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The Table 2 document (``docs/table2.md``) from a results folder: the matrix beside the paper's, which IoU the
paper's MIoU can be, the goal table, time per run, the figures and how to reproduce."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from benchmarks.common import write_text
from benchmarks.table2_figures import FIGURES, draw_figures
from benchmarks.table2_protocol import (
    DATASETS,
    MODEL_LABELS,
    MODELS,
    PAPER,
    computation_only,
    is_paper_protocol,
    recipe,
    repo_relative,
)
from benchmarks.table2_results import RESULTS, SETTINGS, class_iou, read_history, read_results

__all__ = ["foreground_iou_range", "load_cells", "paper_miou_is_foreground_like", "write_report"]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def load_cells(results_dir: Path) -> dict[tuple[str, str], dict]:
    """Finished cells with their history and Fig. 4 prediction (where present); ``val_fg_iou`` (foreground IoU) is
    read from the cell's ``final/val_miou_raw.csv`` where the row lacks it (None without that file)."""
    import numpy as np

    cells = {}
    for key, row in read_results(results_dir).items():
        if row.get("status") != "ok":
            continue
        run_dir = results_dir / key[1] / key[0]
        cell = dict(row)
        if cell.get("val_fg_iou") is None:  # rows of runs before the column: from the evaluation's per-image CSV
            ious = class_iou(run_dir / "final")
            cell["val_fg_iou"] = ious["foreground"] if ious else None
        cell["history"] = read_history(run_dir / "history.csv")
        pred = run_dir / "prediction.npz"
        if pred.is_file():
            with np.load(pred) as z:
                cell["prediction"] = {k: z[k] for k in z.files}
        cells[key] = cell
    return cells


def _matrix_table(cells: dict[tuple[str, str], dict]) -> list[str]:
    head = "| model |" + "".join(f" {d.label} MIoU | {d.label} fg IoU | {d.label} Dice |" for d in DATASETS.values())
    lines = [head, "|---|" + "---:|" * (3 * len(DATASETS))]
    for model in MODELS:
        row = f"| {MODEL_LABELS[model]} |"
        for dataset in DATASETS:
            cell = cells.get((model, dataset)) or {}
            miou, dice = PAPER[model][dataset]
            row += f" {_fmt(cell.get('val_miou'))} ({miou:.4f}) | {_fmt(cell.get('val_fg_iou'))} |"
            row += f" {_fmt(cell.get('val_dice'))} ({dice:.4f}) |"
        lines.append(row)
    return lines


def foreground_iou_range(dice: float) -> tuple[float, float]:
    """The values a foreground IoU can take beside a foreground Dice ``dice`` over the same images.

    Per image IoU = D / (2 - D), which is convex and at most D; so the mean IoU over images lies between
    ``dice / (2 - dice)`` (all images equal, or IoU and Dice of the pooled pixels) and ``dice``.
    """
    return dice / (2 - dice), dice


def paper_miou_is_foreground_like(model: str, dataset: str) -> bool:
    """Whether the paper's MIoU of a cell lies in :func:`foreground_iou_range` of its Dice (4-decimal rounding)."""
    miou, dice = PAPER[model][dataset]
    low, high = foreground_iou_range(dice)
    return low - 5e-5 <= miou <= high + 5e-5


def _definition_table(cells: dict[tuple[str, str], dict]) -> list[str]:
    lines = [
        "| data set | paper cells whose MIoU a foreground IoU can be | paper cells whose MIoU no foreground IoU can "
        "be | PyConvU-Net: paper MIoU, ours MIoU / fg IoU |",
        "|---|---|---|---|",
    ]
    for dataset, ds in DATASETS.items():
        like = [MODEL_LABELS[m] for m in MODELS if paper_miou_is_foreground_like(m, dataset)]
        unlike = []
        for m in MODELS:
            if not paper_miou_is_foreground_like(m, dataset):
                miou, dice = PAPER[m][dataset]
                low, high = foreground_iou_range(dice)
                unlike.append(f"{MODEL_LABELS[m]} (MIoU {miou:.4f}, range {low:.4f}–{high:.4f})")
        cell = cells.get(("pyconvunet", dataset)) or {}
        ours = f"{PAPER['pyconvunet'][dataset][0]:.4f}; {_fmt(cell.get('val_miou'))} / {_fmt(cell.get('val_fg_iou'))}"
        lines.append(f"| {ds.label} | {len(like)} of {len(MODELS)} | {', '.join(unlike) or '–'} | {ours} |")
    return lines


def _goal_table(cells: dict[tuple[str, str], dict], smoke: bool) -> list[str]:
    lines = [
        "| column | paper's best (model) | PyConvU-Net, ours | difference | goal met | ours as fg IoU "
        "| goal met (fg IoU) |",
        "|---|---|---:|---:|---|---:|---|",
    ]

    def verdict(ours: float | None, target: float) -> str:
        return "–" if ours is None else ("n/a (smoke run)" if smoke else ("yes" if ours >= target else "no"))

    for dataset, ds in DATASETS.items():
        for k, metric in enumerate(("MIoU", "Dice")):
            best = max(MODELS, key=lambda m: PAPER[m][dataset][k])
            target = PAPER[best][dataset][k]
            cell = cells.get(("pyconvunet", dataset)) or {}
            ours = cell.get("val_miou" if k == 0 else "val_dice")
            diff = "–" if ours is None else f"{ours - target:+.4f}"
            fg = cell.get("val_fg_iou") if k == 0 else None
            fg_cols = f"{_fmt(fg)} | {verdict(fg, target)}" if k == 0 else "– | –"
            lines.append(
                f"| {ds.label} {metric} | {target:.4f} ({MODEL_LABELS[best]}) | {_fmt(ours)} | {diff} | "
                f"{verdict(ours, target)} | {fg_cols} |"
            )
    return lines


def _time_table(cells: dict[tuple[str, str], dict]) -> list[str]:
    lines = ["| model |" + "".join(f" {d.label} |" for d in DATASETS.values()), "|---|" + "---|" * len(DATASETS)]
    for model in MODELS:
        row = f"| {MODEL_LABELS[model]} |"
        for dataset in DATASETS:
            c = cells.get((model, dataset))
            if c is None:
                row += " – |"
                continue
            more = f", {c['attempts']} calls" if c.get("attempts", 1) > 1 else ""
            row += f" {c['train_seconds']:.0f} s ({c['epochs']} ep, best {c['best_epoch']}{more}) |"
        lines.append(row)
    return lines


def _smoke_warning(settings: dict[str, Any], kind: str) -> list[str]:
    """The warning on top of a report that is not the paper's protocol on a GPU."""
    return [
        f"> **{kind[0].upper() + kind[1:]}: not comparable to the paper.** {settings['epochs']} epoch(s), "
        + (f"{settings['train_subset']} training / {settings['val_subset']} validation cases, " if
           settings.get("train_subset") or settings.get("val_subset") else "")  # fmt: skip
        + (f"images resized to {settings['image_size']}², " if settings.get("image_size") else "")
        + (f"random {settings['patch_size']}² training patches, " if settings.get("patch_size") else "")
        + f"batch {settings['batch_size']}. It shows that the pipeline runs end to end (bundle training, "
        "evaluation of the best checkpoint, figures; resuming is tested in tests/benchmarks/test_table2.py); the "
        "numbers say nothing about the networks. The paper-protocol matrix needs the "
        "GPU: see *Reproduce*.",
        "",
    ]


def _protocol(settings: dict[str, Any], cells: dict[tuple[str, str], dict], devices: list[str]) -> list[str]:
    """What was run: cells, devices, versions, the protocol and how MIoU, Dice and fg IoU are computed."""
    sizes = {d: (c["n_train"], c["n_val"]) for (m, d), c in cells.items()}
    split = ", ".join(f"{DATASETS[d].label} {t}/{v}" for d, (t, v) in sizes.items())
    recipes = "; ".join(sorted({c.get("recipe") or recipe() for c in cells.values()}))  # as run (older rows: now)
    overrides = ", ".join(
        f"`{k}={v}`"
        + (" (computation only: the same function of the same parameters)" if computation_only(k, v) else "")
        for k, v in settings.get("overrides", [])
    )
    versions = sorted({f"torch {c['torch']}, MONAI {c['monai']}" for c in cells.values()})
    return [
        f"Cells finished: {len(cells)} of {len(MODELS) * len(DATASETS)}. Device: {'; '.join(devices)}. "
        f"{'; '.join(versions)}.",
        "",
        f"Protocol: {settings['epochs']} epochs, batch {settings['batch_size']}, seed {settings['seed']}, the "
        f"bundles' 80/20 split by case (training/validation slices: {split}), the bundles' recipe ({recipes})"
        + (f", overrides {overrides}" if overrides else "")
        + (", whole 512×512 slices. " if not settings.get("image_size") and not settings.get("patch_size") else ". ")
        + "The checkpoint with the best validation Dice is evaluated on the validation split with the bundle's "
        "`evaluate.json`: **MIoU** is MONAI's `MeanIoU(include_background=True)` (per image, the mean of the "
        "background and foreground IoU TP/(TP+FP+FN)), **Dice** MONAI's `MeanDice(include_background=False)` "
        "(2TP/(2TP+FP+FN) of the foreground), both averaged over the validation images; images without foreground "
        "do not count towards Dice (MONAI's `ignore_empty`). **fg IoU** is the foreground IoU alone: the mean over "
        "the validation images of the foreground column (`class1`) of the evaluation's per-image "
        "`final/val_miou_raw.csv` (`class_iou` in `benchmarks/table2_results.py`).",
        "",
    ]


def _comparison(cells: dict[tuple[str, str], dict], smoke: bool) -> list[str]:
    """The matrix beside the paper's, which IoU the paper's MIoU can be, and the goal table."""
    return [
        "## Our matrix beside the paper's",
        "",
        "Each cell: ours (paper's Table 2); the paper reports no separate foreground IoU.",
        "",
        *_matrix_table(cells),
        "",
        "## Which IoU the paper's MIoU is",
        "",
        "The paper calls its IoU column MIoU without defining it. Over the same images, a foreground IoU can only lie "
        "between D/(2−D) and D, where D is the foreground Dice beside it (per image IoU = D/(2−D), convex and at most "
        "D); a mean that includes the background IoU is not bound that way (it can exceed the Dice). Checked on the "
        "paper's own (MIoU, Dice) pairs (`paper_miou_is_foreground_like` in `benchmarks/table2_report.py`):",
        "",
        *_definition_table(cells),
        "",
        "Where a paper cell lies inside the range, its MIoU can be a foreground IoU, and is then to be compared with "
        "our **fg IoU** column; the bundles' MIoU (`val_miou`, MONAI's `MeanIoU` over background and foreground) "
        "differs from it in either direction: the background IoU is high where the background is large and easy "
        "(the CT sets) and low where it is thin structure (ISBI, where label 0 is the membranes). Where a paper cell "
        "lies outside the range (its MIoU above its Dice), it cannot be a foreground IoU of the same predictions; "
        "it is compatible with a mean that includes the background, or with an error in the paper's table; the "
        "paper does not say which. The goal table below gives both readings.",
        "",
        "## Goal: PyConvU-Net against the paper's best entry of every column",
        "",
        *_goal_table(cells, smoke),
        "",
    ]


def _time(cells: dict[tuple[str, str], dict], devices: list[str]) -> list[str]:
    """Training seconds per cell, and how many cells shared the device."""
    runner = sorted({c["runner_command"] for c in cells.values()})
    jobs = max(int(c.get("jobs", 1)) for c in cells.values())
    return [
        "## Time per run",
        "",
        "Wall-clock seconds of the bundle's training command (data caching and the validation after every epoch "
        "included; summed over the calls of a resumed run), with the epochs trained and the epoch of the best "
        f"checkpoint. Device: {'; '.join(devices)}."
        + (
            f" The cells come from {len(runner)} runner commands (below), each running up to its `--jobs` cells at a "
            f"time (at most {jobs}); cells running at the same time, of one runner or of runners that ran side by "
            "side, shared the device, which lengthens each."
            if len(runner) > 1
            else (f" Up to {jobs} cells ran at a time and shared the device, which lengthens each." if jobs > 1 else "")
        ),
        "",
        *_time_table(cells),
        "",
    ]


def _figures(rel_fig: str) -> list[str]:
    """The three figures, linked relative to the document."""
    return [
        "## Figures",
        "",
        "Fig. 2 (training loss per epoch, the mean over the epoch's iterations, from the runs' TensorBoard events):",
        "",
        f"![training loss]({rel_fig}/{FIGURES['loss']})",
        "",
        "Fig. 3 (validation MIoU and Dice after every epoch):",
        "",
        f"![validation metrics]({rel_fig}/{FIGURES['val']})",
        "",
        "Fig. 4 (image, ground truth and each model's prediction from its best checkpoint, for the validation case "
        "of median foreground fraction; the Dice is that of this case):",
        "",
        f"![predictions]({rel_fig}/{FIGURES['pred']})",
        "",
    ]


def _reproduce(results_dir: Path, cells: dict[tuple[str, str], dict]) -> list[str]:
    """The runner commands that produced the cells, a cell's bundle command, and the GPU recipe."""
    runner = sorted({c["runner_command"] for c in cells.values()})
    first_cell = cells[min(cells, key=lambda k: (list(DATASETS).index(k[1]), MODELS.index(k[0])))]
    return [
        "## Reproduce",
        "",
        "The runner that produced these numbers:",
        "",
        "```bash",
        *runner,
        "python benchmarks/table2.py report --results-dir " + repo_relative(results_dir),
        "```",
        "",
        "Each cell runs the bundle, e.g. (first cell):",
        "",
        "```bash",
        first_cell["command"],
        "```",
        "",
        "The paper-protocol matrix on the lent GPU, split over 10-minute device calls (`benchmarks/table2_gpu.sh`; "
        "its header gives the details):",
        "",
        "```bash",
        "bash benchmarks/table2_gpu.sh prep     # here: wheels, liver_ct_2d, lung_ct_2d in two halves (ignored dirs)",
        "# device calls, back to back: carry [.whl, .devdata, runs/table2], then [.devdata2], then [.devdata3],",
        "# then nothing; each runs:   bash benchmarks/table2_gpu.sh call",
        "bash benchmarks/table2_gpu.sh collect FILES_AT   # here, after every call: results into runs/table2",
        "python benchmarks/table2.py report",
        "```",
        "",
    ]


def write_report(results_dir: Path, out: Path, figures: Path, note: str | None = None) -> str:
    """Write the Table 2 document and its three figures from a results folder.

    Args:
        results_dir: the runner's results folder (``settings.json``, ``results.jsonl``, one folder per cell).
        out: the markdown file to write (atomically; replaced).
        figures: the folder of the figures (linked relative to ``out``).
        note: a paragraph to put under the title (status, caveats).

    Returns:
        the markdown written.

    Raises:
        SystemExit: the folder has no finished cell.
    """
    settings = json.loads((results_dir / SETTINGS).read_text())
    cells = load_cells(results_dir)
    if not cells:
        raise SystemExit(f"no finished cells in {results_dir / RESULTS}")
    devices = sorted({c["device"] for c in cells.values()})
    on_cpu = all(d.startswith("CPU") for d in devices)
    smoke = not is_paper_protocol(settings) or on_cpu
    kind = "CPU smoke run" if smoke and on_cpu else ("smoke run" if smoke else "paper protocol")
    draw_figures(results_dir, cells, figures, kind)
    lines = ["# Table 2: MIoU and Dice of six networks on three data sets", ""]
    lines += _smoke_warning(settings, kind) if smoke else []
    lines += [note, ""] if note else []
    lines += _protocol(settings, cells, devices) + _comparison(cells, smoke) + _time(cells, devices)
    lines += _figures(os.path.relpath(figures, out.parent)) + _reproduce(results_dir, cells)
    text = "\n".join(lines)
    write_text(out, text)
    return text
