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
import contextlib
import csv
import datetime
import gc
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # pyconv_monai from this checkout also where it is not installed (the GPU device)
    sys.path.insert(1, str(REPO))
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
RESULTS = "results.jsonl"
SETTINGS = "settings.json"
HISTORY_FIELDS = ("epoch", "train_loss", "val_miou", "val_mean_dice")


def log(msg: str) -> None:
    """Progress line on stdout (flushed: the device returns only what was printed)."""
    print(f"[table2 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _rel(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (commands stay short and portable)."""
    p = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return str(p.relative_to(REPO))
    return str(p)


def default_data_root() -> Path:
    """``$PYCONV_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("PYCONV_SHARED_DATA", REPO.parent / "shared" / "data"))


# ------------------------------------------------------------------------------------------------ settings


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


# ------------------------------------------------------------------------------------------- bundle commands


def config_file(dataset: str) -> Path:
    """The training config of the data set's bundle."""
    return REPO / "bundles" / DATASETS[dataset].bundle / "configs" / "train.json"


def bundle_overrides(
    settings: dict[str, Any], model: str, dataset: str, data_dir: Path, run_dir: Path, device: str | None = None
) -> dict[str, str]:
    """Command-line overrides of the bundle for one cell, as strings (``python -m monai.bundle`` parses them).

    Args:
        settings: see :func:`settings_from_args`.
        model: ``--network_name``.
        dataset: key of :data:`DATASETS`.
        data_dir: the data set's folder.
        run_dir: the cell's folder: checkpoints in ``models/``, TensorBoard events in ``eval/``.
        device: ``"cpu"`` or ``"cuda"`` to force a device (``None``: the bundle's choice, a GPU when there is one).
    """
    o = {
        "network_name": model,
        "dataset_dir": _rel(data_dir),
        "epochs": str(settings["epochs"]),
        "batch_size": str(settings["batch_size"]),
        "seed": str(settings["seed"]),
        "ckpt_dir": _rel(run_dir / "models"),
        "output_dir": _rel(run_dir / "eval"),
        "progress": "false",
        "log_images": "false",
    }
    if settings.get("patch_size"):
        o["train_patch_size"] = str([settings["patch_size"]] * 2)
    if settings.get("train_subset"):
        o["train_datalist"] = f"$@split[0][:{settings['train_subset']}]"
    if settings.get("val_subset"):
        o["val_datalist"] = f"$@split[1][:{settings['val_subset']}]"
    if settings.get("image_size"):  # smoke runs: resize images (area) and masks (nearest) after the intensity step
        intensity = json.loads(config_file(dataset).read_text())["image_intensity"]
        resize = {
            "_target_": "Resized",
            "keys": ["image", "label"],
            "spatial_size": [settings["image_size"]] * 2,
            "mode": ["area", "nearest"],
        }
        o["image_intensity"] = literal(list(intensity) + [resize])
    if device == "cpu":
        o["device"], o["amp"] = '$torch.device("cpu")', "$False"
    elif device == "cuda":
        o["device"] = '$torch.device("cuda:0")'
    for key, value in settings.get("overrides", []):
        o[key] = value
    return o


def literal(obj: Any) -> str:
    """A Python literal of JSON-like data with double-quoted strings (reads well inside single shell quotes)."""
    if isinstance(obj, str):
        return json.dumps(obj)
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(literal(x) for x in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {literal(v)}" for k, v in obj.items()) + "}"
    return repr(obj)


def cli_args(overrides: dict[str, str]) -> list[str]:
    """``--key value`` pairs."""
    return [a for k, v in overrides.items() for a in (f"--{k}", v)]


def train_command(dataset: str, overrides: dict[str, str], resume: bool = False) -> list[str]:
    """The bundle's training command for one cell (run from the repository root)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", _rel(config_file(dataset))]
    return cmd + cli_args(overrides) + (["--resume", "true"] if resume else [])


def eval_command(dataset: str, overrides: dict[str, str], out_dir: Path) -> list[str]:
    """The bundle's evaluation command equivalent to what :func:`evaluate_cell` runs in this process."""
    train = _rel(config_file(dataset))
    configs = literal([train, train.replace("train.json", "evaluate.json")])
    return [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", configs] + cli_args(
        {**overrides, "output_dir": _rel(out_dir)}
    )


def show_command(cmd: Sequence[str]) -> str:
    """A command as one would type it (``python`` for this interpreter)."""
    return shlex.join(["python" if i == 0 and c == sys.executable else c for i, c in enumerate(cmd)])


def run_process(cmd: Sequence[str], log_path: Path, deadline: float | None, tag: str) -> tuple[int, float, bool]:
    """Run ``cmd`` from the repository root, its output appended to ``log_path``, stopped at ``deadline``.

    The validation lines (``Metrics --``) are echoed with ``tag``. At the deadline (a ``time.time()`` value) the
    process group gets SIGTERM, then SIGKILL after 10 s.

    Returns:
        the exit status, the seconds it ran, and whether it was stopped at the deadline.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    start = time.time()
    with open(log_path, "a") as out:
        out.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')}: {show_command(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if "Metrics --" in line:
                    print(f"    {tag}: {line.strip().split(' - ')[-1]}", flush=True)
            out.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stopped = False
        try:
            while proc.poll() is None:
                if deadline is not None and time.time() >= deadline:
                    stopped = True
                    _stop(proc)
                    break
                time.sleep(0.5)
        except BaseException:
            _stop(proc)
            raise
        finally:
            proc.wait()
            reader.join(timeout=10)
    return proc.returncode, time.time() - start, stopped


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- evaluation


def _parser(dataset: str, overrides: dict[str, str], evaluate: bool) -> Any:
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
    parser = _parser(dataset, overrides, evaluate=False)
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
    parser = _parser(dataset, {**overrides, "output_dir": _rel(run_dir / "final"), **quiet}, evaluate=True)
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


def environment() -> dict[str, str]:
    """Device and library versions of this process."""
    import monai
    import torch

    from pyconv_monai.machine import cpu_cores, cpu_model

    return {
        "cpu": f"{cpu_model()} ({cpu_cores()} cores)",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------------- runner


def _last_epoch(ckpt_dir: Path) -> int:
    from pyconv_monai.handlers import latest_checkpoint

    path = latest_checkpoint(str(ckpt_dir), required=False)
    return 0 if path is None else int(Path(path).name[len("checkpoint_epoch=") : -len(".pt")])


def _load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"attempts": []}


def _save_state(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, run_dir / "state.json")


def run_cell(
    model: str,
    dataset: str,
    settings: dict[str, Any],
    args: argparse.Namespace,
    env: dict[str, str],
    deadline: float | None,
) -> str:
    """Train (or resume) and evaluate one cell; append its row to the results.

    Returns:
        ``"done"``, ``"stopped"`` (deadline reached; resumable) or ``"failed"``.
    """
    results_dir = Path(args.results_dir)
    tag = f"{DATASETS[dataset].label}/{model}"
    data_dir = Path(args.data_root) / DATASETS[dataset].folder
    run_dir = results_dir / dataset / model
    ckpt_dir = run_dir / "models"
    overrides = bundle_overrides(settings, model, dataset, data_dir, run_dir, args.device)
    state = _load_state(run_dir)
    done_epochs = _last_epoch(ckpt_dir)
    if done_epochs == 0:  # nothing to resume: start clean (events of a run killed in its first epoch go too)
        for sub in ("models", "eval", "final"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
        state = {"attempts": []}
    run_dir.mkdir(parents=True, exist_ok=True)
    first_command = show_command(train_command(dataset, overrides))
    state.setdefault("command", first_command)
    if done_epochs < settings["epochs"]:
        resume = done_epochs > 0
        cmd = train_command(dataset, overrides, resume=resume)
        log(f"{tag}: training, {'resumed after epoch ' + str(done_epochs) if resume else 'from scratch'}")
        rc, seconds, stopped = run_process(cmd, run_dir / "train.log", deadline, tag)
        state["attempts"].append(
            {"resumed_after": done_epochs, "seconds": round(seconds, 1), "rc": rc, "stopped": stopped}
        )
        _save_state(run_dir, state)
        if stopped:
            log(f"{tag}: stopped at the deadline after {seconds:.0f} s, epoch {_last_epoch(ckpt_dir)} saved")
            return "stopped"
        if rc != 0:
            tail = (run_dir / "train.log").read_text()[-2000:]
            log(f"{tag}: training failed (exit {rc}); log {run_dir / 'train.log'}:\n{tail}")
            append_result(results_dir, {"model": model, "dataset": dataset, "status": "failed", "rc": rc})
            return "failed"
    n_train, n_val = split_sizes(dataset, overrides)
    iterations = math.ceil(n_train / settings["batch_size"])
    history = history_from_events(run_dir / "eval", iterations)
    write_history(run_dir / "history.csv", history)
    log(f"{tag}: evaluating the best checkpoint on {n_val} validation cases")
    final = evaluate_cell(dataset, overrides, run_dir)
    scored = [h for h in history if not math.isnan(h["val_mean_dice"])]
    best = max(scored, key=lambda h: h["val_mean_dice"]) if scored else None
    attempts = state["attempts"]
    train_seconds = sum(a["seconds"] for a in attempts)
    row = {
        "model": model,
        "dataset": dataset,
        "status": "ok",
        "val_miou": round(final["val_miou"], 6),
        "val_fg_iou": round(final["val_fg_iou"], 6),
        "val_dice": round(final["val_dice"], 6),
        "best_epoch": best["epoch"] if best else None,
        "best_epoch_val_dice": round(best["val_mean_dice"], 6) if best else None,
        "epochs": _last_epoch(ckpt_dir),
        **{k: settings[k] for k in SETTING_KEYS if k != "epochs"},
        "n_train": n_train,
        "n_val": final["n_val"],
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(1, settings["epochs"]), 2),
        "attempts": len(attempts),
        "eval_seconds": final["eval_seconds"],
        "device": env["gpu"] or f"CPU: {env['cpu']}",
        "torch": env["torch"],
        "monai": env["monai"],
        "python": env["python"],
        "command": state["command"],
        "eval_command": show_command(eval_command(dataset, overrides, run_dir / "final")),
        "runner_command": args.parent_command or args.runner_command,
        "jobs": args.parent_jobs or 1,
        "recipe": recipe(),
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    append_result(results_dir, row)
    log(f"{tag}: MIoU {row['val_miou']:.4f}, Dice {row['val_dice']:.4f} ({train_seconds:.0f} s training)")
    return "done"


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
    """This script, run for one cell with the same setting (``--jobs`` runs several such processes at once)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "run", "--models", model, "--datasets", dataset]
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
                    _stop(proc)
            time.sleep(0.5)
    finally:
        for proc in running:
            _stop(proc)
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


# ---------------------------------------------------------------------------------------------------- report


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


def write_report(results_dir: Path, out: Path, figures: Path, note: str | None = None) -> str:
    """Write the Table 2 document and its three figures from a results folder; return the markdown."""
    settings = json.loads((results_dir / SETTINGS).read_text())
    cells = load_cells(results_dir)
    if not cells:
        raise SystemExit(f"no finished cells in {results_dir / RESULTS}")
    figures.mkdir(parents=True, exist_ok=True)
    devices = sorted({c["device"] for c in cells.values()})
    on_cpu = all(d.startswith("CPU") for d in devices)
    protocol = is_paper_protocol(settings)
    done = len(cells)
    smoke = not protocol or on_cpu
    kind = "CPU smoke run" if smoke and on_cpu else ("smoke run" if smoke else "paper protocol")
    fig_names = {"loss": "table2_loss.png", "val": "table2_val.png", "pred": "table2_predictions.png"}
    plot_curves(cells, figures / fig_names["loss"], ["train_loss"], f"Fig. 2: training loss per epoch ({kind})")
    plot_curves(
        cells, figures / fig_names["val"], ["val_miou", "val_mean_dice"], f"Fig. 3: validation MIoU / Dice ({kind})"
    )
    plot_predictions(results_dir, cells, figures / fig_names["pred"], f"Fig. 4: one validation case ({kind})")
    rel_fig = os.path.relpath(figures, out.parent)
    first_cell = cells[min(cells, key=lambda k: (list(DATASETS).index(k[1]), MODELS.index(k[0])))]
    sizes = {d: (c["n_train"], c["n_val"]) for (m, d), c in cells.items()}
    split = ", ".join(f"{DATASETS[d].label} {t}/{v}" for d, (t, v) in sizes.items())
    runner = sorted({c["runner_command"] for c in cells.values()})
    jobs = max(int(c.get("jobs", 1)) for c in cells.values())
    recipes = "; ".join(sorted({c.get("recipe") or recipe() for c in cells.values()}))  # as run (older rows: now)
    overrides = ", ".join(
        f"`{k}={v}`"
        + (" (computation only: the same function of the same parameters)" if computation_only(k, v) else "")
        for k, v in settings.get("overrides", [])
    )
    versions = sorted({f"torch {c['torch']}, MONAI {c['monai']}" for c in cells.values()})
    lines = ["# Table 2: MIoU and Dice of six networks on three data sets", ""]
    if smoke:
        lines += [
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
    if note:
        lines += [note, ""]
    lines += [
        f"Cells finished: {done} of {len(MODELS) * len(DATASETS)}. Device: {'; '.join(devices)}. "
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
        "`final/val_miou_raw.csv` (`class_iou` in `benchmarks/table2.py`).",
        "",
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
        "paper's own (MIoU, Dice) pairs (`paper_miou_is_foreground_like` in `benchmarks/table2.py`):",
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
        "## Figures",
        "",
        "Fig. 2 (training loss per epoch, the mean over the epoch's iterations, from the runs' TensorBoard events):",
        "",
        f"![training loss]({rel_fig}/{fig_names['loss']})",
        "",
        "Fig. 3 (validation MIoU and Dice after every epoch):",
        "",
        f"![validation metrics]({rel_fig}/{fig_names['val']})",
        "",
        "Fig. 4 (image, ground truth and each model's prediction from its best checkpoint, for the validation case "
        "of median foreground fraction; the Dice is that of this case):",
        "",
        f"![predictions]({rel_fig}/{fig_names['pred']})",
        "",
        "## Reproduce",
        "",
        "The runner that produced these numbers:",
        "",
        "```bash",
        *runner,
        "python benchmarks/table2.py report --results-dir " + _rel(results_dir),
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
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return text


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
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ main


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
    r.add_argument("--data-root", default=str(default_data_root()), help="folder holding the data sets' folders")
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
    args.runner_command = "python benchmarks/table2.py " + shlex.join(raw)
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
