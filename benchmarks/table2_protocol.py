# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What Table 2 compares: the six networks, the three data sets and their bundles, the paper's numbers and
protocol, and the settings that make cells comparable (which overrides leave the trained function unchanged)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO

__all__ = [
    "DATASETS",
    "MODELS",
    "MODEL_LABELS",
    "PAPER",
    "PROTOCOL",
    "PYCONV_COMPUTE_MODES",
    "SETTING_KEYS",
    "DataSet",
    "computation_only",
    "config_file",
    "is_paper_protocol",
    "log",
    "protocol_overrides",
    "recipe",
    "repo_relative",
    "settings_from_args",
]


MODELS: tuple[str, ...] = ("unet", "unetplusplus", "resnet34_unet", "attention_unet", "fcn8s", "pyconvunet")


MODEL_LABELS = {
    "unet": "U-Net",
    "unetplusplus": "UNet++",
    "resnet34_unet": "ResNet34-UNet",
    "attention_unet": "Attention U-Net",
    "fcn8s": "FCN8s",
    "pyconvunet": "PyConvU-Net",
}


@dataclass(frozen=True)
class DataSet:
    """One column pair of Table 2.

    Attributes:
        bundle: the bundle under ``bundles/`` that trains on it.
        folder: its folder under the data root.
        label: short name in tables and figures.
        paper: the paper's name for it.
        cases: number of image/mask pairs of the complete staged set (a partly copied set is not trained on).
    """

    bundle: str
    folder: str
    label: str
    paper: str
    cases: int


DATASETS: dict[str, DataSet] = {
    "lung_ct_segmentation": DataSet("lung_ct_segmentation", "lung_ct_2d", "lung", "kaggleLung", 240),
    "liver_ct_segmentation": DataSet("liver_ct_segmentation", "liver_ct_2d", "liver", "liver", 378),
    "neuron_em_segmentation": DataSet("neuron_em_segmentation", "isbi2012_em", "ISBI", "ISBICell", 25),
}


# Table 2 of Li et al., BMC Bioinformatics 2021: (MIoU, Dice) per model and data set.
PAPER: dict[str, dict[str, tuple[float, float]]] = {
    "unet": {
        "lung_ct_segmentation": (0.7279, 0.7834),
        "liver_ct_segmentation": (0.6207, 0.7386),
        "neuron_em_segmentation": (0.7742, 0.8639),
    },
    "unetplusplus": {
        "lung_ct_segmentation": (0.6078, 0.6471),
        "liver_ct_segmentation": (0.6504, 0.7690),
        "neuron_em_segmentation": (0.7878, 0.8808),
    },
    "resnet34_unet": {
        "lung_ct_segmentation": (0.9494, 0.9721),
        "liver_ct_segmentation": (0.6623, 0.7451),
        "neuron_em_segmentation": (0.8398, 0.9115),
    },
    "attention_unet": {
        "lung_ct_segmentation": (0.7723, 0.8278),
        "liver_ct_segmentation": (0.6989, 0.8083),
        "neuron_em_segmentation": (0.8269, 0.8945),
    },
    "fcn8s": {
        "lung_ct_segmentation": (0.9545, 0.9752),
        "liver_ct_segmentation": (0.5139, 0.6447),
        "neuron_em_segmentation": (0.8345, 0.9005),
    },
    "pyconvunet": {
        "lung_ct_segmentation": (0.9630, 0.9339),
        "liver_ct_segmentation": (0.7050, 0.8227),
        "neuron_em_segmentation": (0.8385, 0.9117),
    },
}
PROTOCOL = {"epochs": 50, "batch_size": 5, "patch_size": None, "image_size": None, "train_subset": None}
PROTOCOL.update({"val_subset": None, "overrides": []})
# the settings that make cells comparable: a results folder holds one setting only
SETTING_KEYS = ("epochs", "batch_size", "seed", "patch_size", "image_size", "train_subset", "val_subset", "overrides")


def log(msg: str) -> None:
    """Progress line on stdout (flushed: the device returns only what was printed)."""
    print(f"[table2 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (commands stay short and portable)."""
    p = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return str(p.relative_to(REPO))
    return str(p)


def config_file(dataset: str) -> Path:
    """The training config of the data set's bundle."""
    return REPO / "bundles" / DATASETS[dataset].bundle / "configs" / "train.json"


def recipe() -> str:
    """Optimizer, schedule, loss and augmentation of the bundles' training configs, in words (``pyconvunet``
    augmentation: flips and 90°/180° rotations)."""

    def name(target: Any) -> str:
        return str(target).rsplit(".", 1)[-1]

    described = set()
    for dataset in DATASETS:
        c = json.loads(config_file(dataset).read_text())
        described.add(
            f"{name(c['optimizer']['_target_'])} lr {c['learning_rate']}, {name(c['lr_scheduler']['_target_'])}, "
            f"{name(c['loss']['_target_'])}, augmentation {c['augmentation']!r}"
        )
    return "; ".join(sorted(described))


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The setting of a run (what makes its cells comparable), from the command line."""
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "patch_size": args.patch_size,
        "image_size": args.image_size,
        "train_subset": args.train_subset,
        "val_subset": args.val_subset,
        "overrides": [list(kv) for kv in (args.override or [])],
    }


# PyConv implementations of ``optimize_pyconv`` / the bundles' ``pyconv_mode``: each computes the same function of the
# same parameters (tests/networks/test_fast_pyconv.py), so choosing one changes how a run computes, not what it trains
# (grouped, split, depthwise and triton were removed from optimize_pyconv by issue 19; runs recorded with them stay
# computation-only overrides)
PYCONV_COMPUTE_MODES: tuple[str, ...] = (
    "reference", "ungrouped", "dense", "grouped", "split", "depthwise", "triton", "auto"
)  # fmt: skip
_OPTIMIZE_PYCONV = re.compile(
    r"^\$\s*pyconv_monai\.networks\.optimize_pyconv\(\s*@network_def(?:\.to\(@device\))?\s*,\s*(?:mode\s*=\s*)?"
    r"(?P<q>[\"'])(?P<mode>\w+)(?P=q)\s*\)(?:\.to\(@device\))?$"
)


def computation_only(key: str, value: str) -> bool:
    """Whether a bundle override only changes how PyConv is computed (same function, same parameters).

    Such overrides are ``pyconv_mode MODE`` and ``network $pyconv_monai.networks.optimize_pyconv(@network_def
    [.to(@device)], "MODE")[.to(@device)]`` with ``MODE`` one of :data:`PYCONV_COMPUTE_MODES`; any other override
    (another network, loss, learning rate, ...) may change what is trained.

    Args:
        key: the override's config key.
        value: its value as given on the command line.

    Returns:
        True for an override that leaves the trained function unchanged.
    """
    value = value.strip()
    if key == "pyconv_mode":
        return value.strip("\"'") in PYCONV_COMPUTE_MODES
    if key == "network":
        match = _OPTIMIZE_PYCONV.match(value)
        return bool(match) and match.group("mode") in PYCONV_COMPUTE_MODES
    return False


def protocol_overrides(settings: dict[str, Any]) -> list[list[str]]:
    """The overrides of a setting that may change the trained function (not :func:`computation_only`)."""
    return [list(kv) for kv in settings.get("overrides") or [] if not computation_only(*kv)]


def is_paper_protocol(settings: dict[str, Any]) -> bool:
    """Whether a setting is the paper's protocol (whole images and data sets, 50 epochs, batch 5).

    Overrides that only choose how PyConv is computed (:func:`computation_only`) keep a setting on the protocol.
    """
    plain = {**settings, "overrides": protocol_overrides(settings)}
    return all(plain.get(k) == v for k, v in PROTOCOL.items())
