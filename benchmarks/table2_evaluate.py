# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What a Table 2 cell measured: its bundle's evaluation of the best checkpoint (MIoU, Dice, the Fig. 4 prediction),
its per-epoch history from the TensorBoard events, and the sizes of its data."""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.table2_protocol import DATASETS, config_file, repo_relative
from benchmarks.table2_results import class_iou

__all__ = [
    "bundle_parser",
    "count_cases",
    "evaluate_cell",
    "figure_case",
    "history_from_events",
    "read_scalars",
    "split_sizes",
]


def bundle_parser(dataset: str, overrides: dict[str, str], evaluate: bool) -> Any:
    """The bundle config with ``overrides`` applied, parsed as ``python -m monai.bundle run`` parses them."""
    from fire.parser import DefaultParseValue
    from monai.bundle import ConfigParser

    train = config_file(dataset)
    parser = ConfigParser()
    parser.read_config([str(train), str(train.parent / "evaluate.json")] if evaluate else str(train))
    for key, value in overrides.items():
        parser[key] = DefaultParseValue(value)
    return parser


def count_cases(data_dir: Path, dataset: str) -> int:
    """Number of image/mask pairs (slices for stacks) in a data set's folder."""
    from pyconv_monai.data import load_datalist

    return len(load_datalist(str(data_dir), layout=DATASETS[dataset].folder))


def split_sizes(dataset: str, overrides: dict[str, str]) -> tuple[int, int]:
    """Number of training and validation items of a cell."""
    parser = bundle_parser(dataset, overrides, evaluate=False)
    return len(parser.get_parsed_content("train_datalist")), len(parser.get_parsed_content("val_datalist"))


def figure_case(labels: Sequence[Any]) -> int:
    """Index of the validation case shown in Fig. 4: the median foreground fraction among cases with foreground."""
    fractions = [float((lab > 0).float().mean()) for lab in labels]
    candidates = sorted((f, i) for i, f in enumerate(fractions) if f > 0) or [(0.0, 0)]
    return candidates[(len(candidates) - 1) // 2][1]


def evaluate_cell(dataset: str, overrides: dict[str, str], run_dir: Path) -> dict[str, Any]:
    """Evaluate the cell's best checkpoint (``models/model.pt``) on the validation split with the bundle's
    ``evaluate.json`` (MONAI ``MeanIoU``, ``MeanDice``; per-case CSVs in ``final/``), and save the prediction of
    the Fig. 4 case in ``prediction.npz`` (the image and mask of that case in ``../figure_case.npz``).

    Returns:
        ``val_miou``, ``val_fg_iou`` (foreground IoU: :func:`class_iou`), ``val_dice``, ``n_val`` and
        ``eval_seconds``.
    """
    import numpy as np
    import torch
    from monai.metrics import compute_dice, compute_iou

    start = time.time()
    quiet = {"validate#dataset#progress": "False"}  # no caching progress bar here (not in eval_command)
    final = {"output_dir": repo_relative(run_dir / "final")}
    parser = bundle_parser(dataset, {**overrides, **final, **quiet}, evaluate=True)
    parser.get_parsed_content("initialize")
    logging.disable(logging.INFO)  # the evaluator logs its metrics as "Epoch[1]", which reads like training
    try:
        parser.get_parsed_content("run")
    finally:
        logging.disable(logging.NOTSET)
    evaluator = parser.get_parsed_content("validate#evaluator")
    metrics = {k: float(v) for k, v in evaluator.state.metrics.items()}
    dataset_obj = parser.get_parsed_content("validate#dataset")
    network, device = parser.get_parsed_content("network"), parser.get_parsed_content("device")
    items = [dataset_obj[i] for i in range(len(dataset_obj))]
    index = figure_case([item["label"] for item in items])
    item = items[index]
    network.eval()
    with torch.no_grad():
        prob = torch.sigmoid(network(item["image"][None].to(device).float())).cpu()
    pred = (prob > 0.5).float()
    label = (item["label"][None] > 0).float()
    onehot = [torch.cat([1 - x, x], dim=1) for x in (pred, label)]
    case = str(item.get("case", index))
    case_dice = float(compute_dice(*onehot, include_background=False).nan_to_num(1.0).mean())
    case_miou = float(compute_iou(*onehot, include_background=True).nanmean())
    np.savez_compressed(
        run_dir / "prediction.npz", pred=pred[0, 0].numpy().astype(np.uint8), case=case, dice=case_dice, miou=case_miou
    )
    case_file = run_dir.parent / "figure_case.npz"
    if not case_file.is_file():  # written once per data set, atomically (cells may run side by side)
        image = item["image"][0].float().numpy().astype(np.float16)
        tmp = case_file.with_name(f".{case_file.stem}.{os.getpid()}.npz")
        np.savez_compressed(tmp, image=image, label=label[0, 0].numpy().astype(np.uint8), case=case)
        os.replace(tmp, case_file)
    n_val = len(items)
    del parser, evaluator, dataset_obj, network, items
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    ious = class_iou(run_dir / "final")
    return {
        "val_miou": metrics["val_miou"],
        "val_fg_iou": ious["foreground"] if ious else math.nan,
        "val_dice": metrics["val_mean_dice"],
        "n_val": n_val,
        "eval_seconds": round(time.time() - start, 1),
    }


def read_scalars(tb_dir: Path) -> dict[str, dict[int, float]]:
    """Scalars of the TensorBoard event files of ``tb_dir``: ``{tag: {step: value}}``.

    Files are read in the order they were written; a resumed run re-logs the steps of the epoch that was cut
    short, and its values win.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    files = sorted(tb_dir.glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values = scalars.setdefault(tag, {})
            for event in acc.Scalars(tag):
                values[int(event.step)] = float(event.value)
    return scalars


def history_from_events(tb_dir: Path, iterations_per_epoch: int) -> list[dict[str, float]]:
    """Per-epoch training loss (mean over the epoch's iterations) and validation metrics of a bundle run."""
    scalars = read_scalars(tb_dir)
    losses: dict[int, list[float]] = {}
    for step, value in scalars.get("train_loss", {}).items():
        losses.setdefault((step - 1) // iterations_per_epoch + 1, []).append(value)
    epochs = sorted(set(losses) | set(scalars.get("val_mean_dice", {})))
    rows = []
    for epoch in epochs:
        loss = losses.get(epoch)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": sum(loss) / len(loss) if loss else math.nan,
                "val_miou": scalars.get("val_miou", {}).get(epoch, math.nan),
                "val_mean_dice": scalars.get("val_mean_dice", {}).get(epoch, math.nan),
            }
        )
    return rows
