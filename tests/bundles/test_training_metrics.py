"""Training Dice and MeanIoU on the training batches, in the log, TensorBoard and the metrics CSV (issue 10, part 3);
a fresh run keeps an earlier run's files when it first writes its own (part 5)."""

from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EMBEDDED_DATA, REPO

TINY = [
    "--epochs", "1", "--train_patch_size", "[64, 64]", "--batch_size", "2", "--progress", "false",
    "--log_images", "false", "--train_datalist", "$@split[0][:4]", "--val_datalist", "$@split[1][:2]",
]  # fmt: skip
METRICS = ["train_mean_dice", "train_miou", "val_mean_dice", "val_miou"]


def read_tensorboard(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return scalars


@pytest.mark.slow
def test_training_metrics_reach_log_tensorboard_and_csv(tmp_path):
    bundle_dir = tmp_path / "neuron_em_segmentation"
    shutil.copytree(REPO / "bundles" / "neuron_em_segmentation", bundle_dir, ignore=shutil.ignore_patterns("eval"))
    models, eval_dir = bundle_dir / "models", bundle_dir / "eval"
    shipped = (models / "model.pt").read_bytes()
    (models / "checkpoint_epoch=7.pt").write_bytes(b"an earlier run's epoch 7")
    eval_dir.mkdir()
    (eval_dir / "metrics_history.csv").write_text("epoch,val_mean_dice\n1,0.5\n")

    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
         "--dataset_dir", str(EMBEDDED_DATA / "isbi2012_em"), *TINY],
        cwd=bundle_dir, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]

    # the log: StatsHandler of the trainer shows the training metrics of the epoch
    logged = re.search(r"Epoch\[1\] Metrics -- train_mean_dice: ([\d.]+) train_miou: ([\d.]+)", log)
    assert logged, log[-3000:]

    # TensorBoard: one event file (one writer for all handlers) with the four metrics at epoch 1
    assert len(list(eval_dir.glob("events.out.tfevents.*"))) == 1
    scalars = read_tensorboard(eval_dir)
    for name in METRICS + ["train_loss"]:
        assert name in scalars, (name, sorted(scalars))
    tb = {name: scalars[name][1] for name in METRICS}

    # the CSV: one row for epoch 1, training metrics beside the validation metrics, equal to TensorBoard's
    with open(eval_dir / "metrics_history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["epoch"] == "1", rows
    for name in METRICS:
        value = float(rows[0][name])
        assert 0.0 <= value <= 1.0 and value == pytest.approx(tb[name], abs=1e-6), (name, value, tb[name])
    assert float(logged.group(1)) == pytest.approx(tb["train_mean_dice"], abs=1e-4)
    assert float(logged.group(2)) == pytest.approx(tb["train_miou"], abs=1e-4)
    losses = list(scalars["train_loss"].values())
    assert len(losses) == 2 and float(rows[0]["train_loss"]) == pytest.approx(sum(losses) / 2, rel=1e-5)
    assert not math.isnan(float(rows[0]["train_loss"]))

    # earlier files were kept under new names when the run first wrote its own, not overwritten
    kept = {p.name: p.read_bytes() for p in models.glob("model.*.pt")}
    assert list(kept.values()) == [shipped], sorted(kept)
    assert [p.read_bytes() for p in models.glob("checkpoint_epoch=7.*.pt")] == [b"an earlier run's epoch 7"]
    assert sorted(p.name for p in models.glob("checkpoint_epoch=*.pt") if p.name.count(".") == 1) == [
        "checkpoint_epoch=1.pt"
    ]
    assert [p.read_text() for p in eval_dir.glob("metrics_history.*.csv")] == ["epoch,val_mean_dice\n1,0.5\n"]
