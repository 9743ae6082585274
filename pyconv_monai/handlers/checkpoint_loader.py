# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""MONAI's ``CheckpointLoader`` with errors that say what to do, and weights checked to be finite."""

from __future__ import annotations

import logging
import os

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

__all__ = ["CheckedCheckpointLoader", "load_checkpoint"]

logger = logging.getLogger(__name__)


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` (same arguments, attached to ``Events.STARTED``) that names the file and the
    problem when the weights are missing, unreadable, do not fit the network, or hold NaN/Inf values.

    It loads a plain state dict (the shipped ``models/model.pt``, the best model the training saves) or a checkpoint
    holding it under the ``load_dict`` key: the bundles use ``"network"``, the key of the network in ``train.json``'s
    epoch checkpoints, so both load.

    Raises:
        FileNotFoundError: (on call) no file at ``load_path``; the message says how to get or choose weights.
        ValueError: (on call) not a readable checkpoint, tensors that do not fit the network, or non-finite weights.
    """

    def __call__(self, engine: Engine) -> None:
        _checked_load(self, engine)


def _checked_load(loader: CheckpointLoader, engine: Engine) -> None:
    """MONAI's loading by ``loader`` on ``engine``, with the checks of :class:`CheckedCheckpointLoader`."""
    path = os.path.abspath(os.fspath(loader.load_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no model weights at {path}. Train the bundle first (from the bundle folder, python -m monai.bundle "
            "run training --config_file configs/train.json writes models/model.pt there) or pass --ckpt_file "
            "/path/to/model.pt (pyconv-monai segment: --ckpt-file)."
        )
    modules = [v for v in loader.load_dict.values() if isinstance(v, torch.nn.Module)]
    what = ", ".join(type(m).__name__ for m in modules) or "objects"
    try:
        CheckpointLoader.__call__(loader, engine)
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from e
        detail = str(e).splitlines()
        raise ValueError(
            f"{path} does not fit the network {what} (trained with another --network_name or "
            f"--network_def?): {' '.join(detail[:3])[:600]}"
        ) from e
    except Exception as e:  # unpickling, truncated files, not a checkpoint at all
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from e
    for module in modules:
        bad = [n for n, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ValueError(
                f"{path}: the weights hold NaN or Inf values ({', '.join(bad[:3])}"
                f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}); they cannot give a true mask."
            )
    logger.info(f"loaded weights from {path}")


def load_checkpoint(checkpoint_loader: CheckpointLoader) -> None:
    """Run a ``CheckpointLoader``'s loading once, outside a training or evaluation run, with the checks of
    :class:`CheckedCheckpointLoader` (on a minimal ignite ``Engine``, which the handler needs for its logger).

    Args:
        checkpoint_loader: e.g. ``CheckpointLoader(load_path="models/model.pt", load_dict={"network": network})``.

    Raises:
        FileNotFoundError, ValueError: see :class:`CheckedCheckpointLoader`.
    """
    _checked_load(checkpoint_loader, Engine(lambda engine, batch: None))
