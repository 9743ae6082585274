# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""One CSV row per training epoch: the training metrics and loss beside the validation metrics."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import from_engine
from monai.utils import is_scalar
from pyconv_monai.utils import preserve_existing

__all__ = ["MetricsHistorySaver"]


def _number(value: Any) -> float:
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


class MetricsHistorySaver:
    """Write ``save_dir/filename`` after every training epoch: one row per epoch with the trainer's metrics (on the
    training batches, e.g. ``train_mean_dice``, ``train_miou``), the mean training loss, and the validator's
    metrics of that epoch (``val_mean_dice``, ``val_miou``; empty in epochs without validation).

    Attach it to the trainer after the ``ValidationHandler``. The file is rewritten atomically at each epoch. A
    resumed run keeps the rows of the epochs before the one it resumes at; a fresh run keeps the file an earlier
    run left (as ``<name>.<timestamp>.csv``, see :func:`pyconv_monai.utils.preserve_existing`) when it writes
    its first row. Nothing is written before the first epoch ends.

    Args:
        save_dir: folder of the CSV (created at the first write), e.g. the bundle's ``output_dir``.
        validator: the evaluator that the trainer's ``ValidationHandler`` runs, or ``None``.
        filename: name of the CSV.
        loss_transform: picks the loss from the trainer's output (one value per iteration).
    """

    def __init__(
        self,
        save_dir: str,
        validator: Engine | None = None,
        filename: str = "metrics_history.csv",
        loss_transform: Callable[[Any], Any] = from_engine(["loss"], first=True),  # noqa: B008
    ) -> None:
        self.path = os.path.join(os.fspath(save_dir), filename)
        self.validator = validator
        self.loss_transform = loss_transform
        self._loss_sum = 0.0
        self._loss_count = 0
        self._first_write = True

    def attach(self, trainer: Engine) -> None:
        """Sum the loss at every iteration and write the row at the end of every epoch of ``trainer``."""
        trainer.add_event_handler(Events.EPOCH_STARTED, self._reset)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._add_loss)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def _add_loss(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        if loss is not None:
            self._loss_sum += _number(loss)
            self._loss_count += 1

    def row(self, trainer: Engine) -> dict[str, Any]:
        """This epoch's row: ``epoch``, ``train_loss`` (mean over the epoch), the trainer's and the validator's
        scalar metrics."""
        epoch = trainer.state.epoch
        row: dict[str, Any] = {"epoch": epoch}
        row["train_loss"] = self._loss_sum / self._loss_count if self._loss_count else math.nan
        row.update({k: _number(v) for k, v in trainer.state.metrics.items() if is_scalar(v)})
        validator = self.validator
        if validator is not None and getattr(validator.state, "epoch", None) == epoch:
            row.update({k: _number(v) for k, v in validator.state.metrics.items() if is_scalar(v)})
        return row

    def _read(self) -> list[dict[str, str]]:
        if not os.path.isfile(self.path):
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, trainer: Engine) -> None:
        row = self.row(trainer)
        epoch = row["epoch"]
        if self._first_write and epoch == 1:  # a fresh run: keep an earlier run's file
            preserve_existing(self.path)
        self._first_write = False
        rows: list[dict[str, Any]] = [r for r in self._read() if int(r.get("epoch") or 0) < epoch] + [row]
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields, restval="")
                writer.writeheader()
                writer.writerows(rows)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
