# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""int8 calibration of a bundle: activation ranges from its training slices, kept only if validation Dice holds.

:func:`quantize_bundle` reads the bundle's ``train.json`` (its data split and validation transforms), measures the
activation ranges of the ONNX export on evenly spaced training slices (:func:`pyconv_monai.runtime.calibrate_network`),
then segments the whole validation split with fp32 and with int8 on every installed CPU runtime. The record
(``models/model_int8.json``) is written, atomically, only if every runtime's mean Dice changes by at most
``max_change`` (0.002) against fp32; it carries that measurement. Inference uses it with ``precision`` ``"auto"``
or ``"int8"`` while it matches the weights (:func:`pyconv_monai.runtime.select_runtime`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.handlers import CheckpointLoader
from monai.metrics import DiceMetric
from monai.transforms import Compose
from pyconv_monai.handlers import load_checkpoint
from pyconv_monai.runtime import calibrate_network, select_runtime, write_calibration
from pyconv_monai.runtime.backends import ORT_INT8_REFUSED, available_runtimes, int8_runs_here

__all__ = [
    "CALIBRATION_FILE",
    "MAX_DICE_CHANGE",
    "QuantizationRejected",
    "quantize_bundle",
    "mean_dice",
    "training_config",
    "split_slices",
    "run_batched",
]

CALIBRATION_FILE = "model_int8.json"  # beside models/model.pt; the bundles' inference.json pass it as `calibration`
MAX_DICE_CHANGE = 0.002  # the rule for a lossy precision: validation Dice within this of fp32 on each bundle


class QuantizationRejected(ValueError):
    """int8 changed the validation Dice by more than allowed: no record was written."""


def mean_dice(logits: torch.Tensor, label: torch.Tensor) -> float:
    """Mean over slices of the foreground Dice of ``logits > 0`` against ``label > 0.5`` (MONAI ``DiceMetric``; a
    slice with neither has Dice 1).

    Args:
        logits: ``(N, 1, H, W)`` network outputs.
        label: ``(N, 1, H, W)`` labels.

    Returns:
        the mean Dice.
    """
    metric = DiceMetric(include_background=True, reduction="mean", ignore_empty=False)
    return float(metric((logits > 0).float(), (label > 0.5).float()).mean())


def run_batched(network: torch.nn.Module, x: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """The network's outputs for ``x``, ``batch`` slices per call, without gradients.

    Args:
        network: a module taking ``(B, C, H, W)`` (the torch network or a runtime of
            :func:`~pyconv_monai.runtime.select_runtime`).
        x: ``(N, C, H, W)`` slices.
        batch: slices per call.

    Returns:
        ``(N, ...)`` outputs.
    """
    with torch.no_grad():
        return torch.cat([network(x[i : i + batch]) for i in range(0, len(x), batch)])


def training_config(bundle_root: str | os.PathLike, dataset_dir: str | os.PathLike | None = None) -> ConfigParser:
    """A bundle's ``train.json`` with its ``bundle_root`` (and ``dataset_dir``, when given) set: its data split is
    ``train_datalist`` / ``val_datalist``.

    Args:
        bundle_root: the bundle folder.
        dataset_dir: the training data (default: the bundle's own default).

    Returns:
        the parser (nothing parsed yet).
    """
    root = Path(bundle_root).resolve()
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser["bundle_root"] = str(root)
    if dataset_dir is not None:
        parser["dataset_dir"] = os.path.abspath(dataset_dir)
    return parser


def split_slices(parser: ConfigParser, items: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of data-list items through the bundle's validation transforms (``validate#preprocessing``).

    Args:
        parser: the bundle's training config (:func:`training_config`).
        items: items of its ``train_datalist`` or ``val_datalist``.

    Returns:
        ``(images, labels)``, each ``(N, C, H, W)`` float.
    """
    transform = Compose(parser.get_parsed_content("validate#preprocessing").transforms)
    samples = [transform(dict(item)) for item in items]
    x = torch.stack([torch.as_tensor(s["image"]).float() for s in samples])
    y = torch.stack([torch.as_tensor(s["label"]).float() for s in samples])
    return x, y


def quantize_bundle(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    slices: int = 32,
    ckpt_file: str | os.PathLike | None = None,
    overwrite: bool = False,
    max_change: float = MAX_DICE_CHANGE,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Calibrate a bundle's network for int8 and write ``models/model_int8.json`` if validation Dice allows it.

    Args:
        bundle_root: the bundle folder.
        dataset_dir: the training data (``train.json``'s ``dataset_dir``; default: the bundle's own default).
        slices: training slices to calibrate on (evenly spaced over the training split).
        ckpt_file: the weights (default ``<bundle>/models/model.pt``).
        overwrite: replace an existing record.
        max_change: the largest allowed change of mean validation Dice, int8 against fp32, on any runtime.
        progress: called with a line of text per step (e.g. ``print``).

    Returns:
        the record written (with its ``dice`` measurement).

    Raises:
        FileExistsError: the record exists and ``overwrite`` is False (checked before any work).
        FileNotFoundError: no weights, or no training or validation slices under ``dataset_dir``.
        QuantizationRejected: int8 changed a runtime's validation Dice by more than ``max_change``.
    """
    say = progress or (lambda text: None)
    root = Path(bundle_root).resolve()
    ckpt = Path(ckpt_file) if ckpt_file else root / "models" / "model.pt"
    target = ckpt.parent / CALIBRATION_FILE
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists (pass overwrite to replace it)")
    if not ckpt.is_file():
        raise FileNotFoundError(f"no weights at {ckpt}")
    parser = training_config(root, dataset_dir)
    data = parser.get_parsed_content("dataset_dir")
    train, val = parser.get_parsed_content("train_datalist"), parser.get_parsed_content("val_datalist")
    if not train or not val:
        raise FileNotFoundError(f"no training and validation slices under {data} (layout {parser['layout']!r})")
    network = parser.get_parsed_content("network_def")
    load_checkpoint(CheckpointLoader(load_path=str(ckpt), load_dict={"model": network}, map_location="cpu"))
    network.eval()

    picks = np.unique(np.linspace(0, len(train) - 1, min(slices, len(train))).round().astype(int))
    say(f"calibrating on {len(picks)} of {len(train)} training slices from {data}")
    x_cal, _ = split_slices(parser, [train[i] for i in picks])
    record = calibrate_network(network, list(x_cal))
    record["calibration"] = {"dataset_dir": os.path.basename(os.path.normpath(data)), "layout": parser["layout"],
                             "training_slices": len(train), "calibration_slices": len(picks)}  # fmt: skip

    say(f"checking validation Dice on {len(val)} slices: fp32 against int8")
    x, y = split_slices(parser, val)
    runtimes = [r for r in ("openvino", "onnxruntime") if r in available_runtimes()]
    if not runtimes:
        raise FileNotFoundError("neither OpenVINO nor ONNX Runtime is installed: int8 cannot run here")
    for refused in [r for r in runtimes if not int8_runs_here(r)]:  # its int8 is refused here: nothing to measure
        say(f"  {refused}: not measured ({ORT_INT8_REFUSED})")
        runtimes.remove(refused)
    if not runtimes:
        raise FileNotFoundError(f"int8 cannot run here: {ORT_INT8_REFUSED}")
    size = tuple(x.shape[2:])
    fp32 = mean_dice(
        run_batched(select_runtime(network, runtimes[0], precision="fp32", size=size, cache_dir="off"), x), y
    )
    scores = {}
    for runtime in runtimes:
        with_int8 = select_runtime(network, runtime, precision="int8", size=size, cache_dir="off",
                                   calibration=record)  # fmt: skip
        scores[runtime] = mean_dice(run_batched(with_int8, x), y)
        say(f"  {runtime}: Dice fp32 {fp32:.5f}, int8 {scores[runtime]:.5f}")
    record["dice"] = {"validation_slices": len(val), "fp32": fp32, "int8": scores, "max_change": max_change}
    worst = max(abs(fp32 - s) for s in scores.values())
    if worst > max_change:
        raise QuantizationRejected(
            f"int8 changes the validation Dice of {root.name} by {worst:.5f} (> {max_change}): fp32 {fp32:.5f}, "
            + ", ".join(f"{r} int8 {s:.5f}" for r, s in scores.items())
            + f"; {target} not written"
        )
    write_calibration(target, record, overwrite=overwrite)
    say(f"wrote {target} (largest Dice change {worst:.5f})")
    return record
