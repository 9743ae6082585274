# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Early stopping of a trainer on a validation metric, declared among the trainer's handlers."""

from __future__ import annotations

from ignite.engine import Engine
from monai.handlers import EarlyStopHandler

__all__ = ["ValidationEarlyStopHandler"]


class ValidationEarlyStopHandler:
    """Stop training when the validator's key metric has not improved for ``patience`` validation runs.

    MONAI's ``EarlyStopHandler`` must be attached to the evaluator and given the trainer, which a bundle config
    cannot do without a reference cycle (the trainer's handlers refer to the evaluator). This handler sits in the
    trainer's handler list and wires itself to both when attached.

    Args:
        validator: the evaluator run by the ``ValidationHandler``.
        metric_name: metric to watch (higher is better), e.g. ``"val_mean_dice"``.
        patience: number of validation runs without improvement before stopping (a string such as ``"5"`` from
            the command line is read as a number).
        min_delta: smallest increase that counts as an improvement.
    """

    def __init__(self, validator: Engine, metric_name: str, patience: int | str, min_delta: float = 0.0) -> None:
        patience = int(patience)
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}.")
        self.validator = validator
        self.metric_name = metric_name
        self.patience = patience
        self.min_delta = min_delta

    def _score(self, engine: Engine) -> float:
        return float(engine.state.metrics[self.metric_name])

    def attach(self, trainer: Engine) -> None:
        """Watch the validator's metric after each validation run and stop ``trainer``."""
        handler = EarlyStopHandler(
            patience=self.patience, score_function=self._score, trainer=trainer, min_delta=self.min_delta
        )
        handler.attach(self.validator)
