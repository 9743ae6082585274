# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The figures of Table 2: training loss and validation metrics per epoch (Figs. 2 and 3), one validation case as
each model predicts it (Fig. 4), and one cell's curves; matplotlib (the ``plot`` extra) is imported when drawing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyconv_monai.utils import atomic_write

from benchmarks.table2_protocol import DATASETS, MODEL_LABELS, MODELS
from benchmarks.table2_results import read_history, read_results

__all__ = ["FIGURES", "draw_figures", "plot_cell_curves", "plot_curves", "plot_predictions"]

# the report's figures, by what they show
FIGURES = {"loss": "table2_loss.png", "val": "table2_val.png", "pred": "table2_predictions.png"}


def _colors() -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i) for i, m in enumerate(MODELS)}


def _present(cells: dict[tuple[str, str], dict]) -> tuple[list[str], list[str]]:
    models = [m for m in MODELS if any(k[0] == m for k in cells)]
    datasets = [d for d in DATASETS if any(k[1] == d for k in cells)]
    return models, datasets


def plot_curves(cells: dict[tuple[str, str], dict], path: Path, metrics: Sequence[str], title: str) -> None:
    """One row of panels per metric (``train_loss``, ``val_miou``, ``val_mean_dice``), one column per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    models, datasets = _present(cells)
    names = {"train_loss": "training loss (BCE)", "val_miou": "validation MIoU", "val_mean_dice": "validation Dice"}
    colors = _colors()
    fig, axes = plt.subplots(
        len(metrics), len(datasets), figsize=(4.2 * len(datasets), 3.2 * len(metrics)), squeeze=False
    )
    for j, dataset in enumerate(datasets):
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for model in models:
                history = cells.get((model, dataset), {}).get("history", [])
                points = [(h["epoch"], h[metric]) for h in history if not math.isnan(h[metric])]
                if points:
                    x, y = zip(*points)
                    ax.plot(x, y, marker="o" if len(x) < 8 else None, ms=3, color=colors[model])
                    ax.lines[-1].set_label(MODEL_LABELS[model])
            ax.set_title(f"{DATASETS[dataset].label}: {names[metric]}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if metric != "train_loss":
                ax.set_ylim(0.0, 1.0)
    legend: dict[str, Any] = {}
    for row in axes:
        for ax in row:
            for h, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, h)
    labels = [MODEL_LABELS[m] for m in models if MODEL_LABELS[m] in legend]
    fig.legend(
        [legend[label] for label in labels], labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predictions(results_dir: Path, cells: dict[tuple[str, str], dict], path: Path, title: str) -> None:
    """Fig. 4: per data set, the image, its mask and each model's prediction of one validation case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models, datasets = _present(cells)
    datasets = [d for d in datasets if (results_dir / d / "figure_case.npz").is_file()]
    fig, axes = plt.subplots(
        len(datasets), 2 + len(models), figsize=(1.9 * (2 + len(models)), 2.5 * len(datasets)), squeeze=False
    )
    for i, dataset in enumerate(datasets):
        with np.load(results_dir / dataset / "figure_case.npz") as z:
            image, label, case = z["image"].astype(np.float32), z["label"], str(z["case"])
        panels = [(image, f"image\n{case}", None), (label, "ground truth", (0, 1))]
        for model in models:
            pred = cells.get((model, dataset), {}).get("prediction")
            if pred is None:
                panels.append((None, MODEL_LABELS[model], None))
            else:
                panels.append((pred["pred"], f"{MODEL_LABELS[model]}\nDice {float(pred['dice']):.3f}", (0, 1)))
        for j, (data, name, limits) in enumerate(panels):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if data is not None:  # (H, W) as LoadSlice2Dd gives them (as stored); masks on a fixed 0-1 scale
                vmin, vmax = limits or (None, None)
                ax.imshow(data, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            else:
                ax.set_facecolor("0.85")
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set_title(name, fontsize=8)
        axes[i][0].set_ylabel(DATASETS[dataset].label, fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_figures(results_dir: Path, cells: dict[tuple[str, str], dict], figures: Path, kind: str) -> None:
    """Draw Figs. 2-4 of the report into ``figures`` (named as :data:`FIGURES`).

    Args:
        results_dir: the runner's results folder (Fig. 4 reads each data set's ``figure_case.npz``).
        cells: the finished cells (``table2_report.load_cells``).
        figures: the folder of the PNGs (made if missing).
        kind: what the run was (``"paper protocol"``, ``"smoke run"``, ...), put in the titles.
    """
    figures.mkdir(parents=True, exist_ok=True)
    plot_curves(cells, figures / FIGURES["loss"], ["train_loss"], f"Fig. 2: training loss per epoch ({kind})")
    plot_curves(
        cells, figures / FIGURES["val"], ["val_miou", "val_mean_dice"], f"Fig. 3: validation MIoU / Dice ({kind})"
    )
    plot_predictions(results_dir, cells, figures / FIGURES["pred"], f"Fig. 4: one validation case ({kind})")


def plot_cell_curves(results_dir: Path, model: str, dataset: str, path: Path) -> None:
    """Training curves of one cell (e.g. for the bundle whose weights it produced): training loss, validation MIoU
    and Dice per epoch from its ``history.csv``, with the best epoch marked; written atomically to ``path``.

    Args:
        results_dir: the runner's results folder.
        model: a key of :data:`MODELS`.
        dataset: a key of :data:`DATASETS`.
        path: the PNG to write.

    Raises:
        SystemExit: when the cell has no finished row or no history (naming the folder).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    row = read_results(results_dir).get((model, dataset))
    history = read_history(results_dir / dataset / model / "history.csv")
    if not row or row.get("status") != "ok" or not history:
        raise SystemExit(f"{results_dir}: no finished cell {model} / {dataset} with a history.csv")
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], color="tab:blue")
    loss_ax.set_title("training loss (BCE), mean per epoch", fontsize=10)
    for key, name, color in (("val_mean_dice", "Dice", "tab:green"), ("val_miou", "MIoU (bg and fg)", "tab:orange")):
        val_ax.plot(epochs, [h[key] for h in history], color=color, label=f"validation {name}")
    if row.get("best_epoch"):
        val_ax.axvline(row["best_epoch"], color="0.5", ls="--", lw=1, label=f"best epoch ({row['best_epoch']})")
    val_ax.set_title("validation metrics per epoch", fontsize=10)
    val_ax.legend(fontsize=8, loc="lower right")
    for ax in (loss_ax, val_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{MODEL_LABELS[model]} on {DATASETS[dataset].label}: {row['epochs']} epochs, batch {row['batch_size']}, "
        f"{row['n_train']}/{row['n_val']} slices, {row['device']}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(path, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
