# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Save the latest state of a training run after every epoch, and resume from it."""

from __future__ import annotations

import os
import re
from typing import Any

from ignite.engine import Engine
from monai.handlers import CheckpointLoader
from pyconv_monai.handlers.checkpoint_saver import AtomicCheckpointSaver
from pyconv_monai.utils import as_bool

__all__ = ["LatestCheckpointHandler", "latest_checkpoint"]

EPOCH_CHECKPOINT = r"checkpoint_epoch=\d+\.pt"  # the names this handler writes (a regular expression)
_EPOCH = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str, required: bool = True) -> str | None:
    """Path of the most recent epoch checkpoint (``checkpoint_epoch=N.pt``) in ``ckpt_dir``.

    Args:
        ckpt_dir: folder the training run writes its checkpoints to.
        required: raise when there is none (else return ``None``).

    Raises:
        FileNotFoundError: when ``required`` and no epoch checkpoint exists, with what the folder holds.
    """
    found = []
    if os.path.isdir(ckpt_dir):
        for name in os.listdir(ckpt_dir):
            m = _EPOCH.match(name)
            if m:
                found.append((int(m.group(1)), name))
    if not found:
        if required:
            content = sorted(os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir) else "the folder does not exist"
            raise FileNotFoundError(
                f"cannot resume: no checkpoint_epoch=N.pt in {ckpt_dir} ({content}); start without --resume."
            )
        return None
    return os.path.join(ckpt_dir, max(found)[1])


class LatestCheckpointHandler:
    """Write ``checkpoint_epoch=N.pt`` (atomically, only the latest kept) and optionally resume from it.

    The checkpoint holds the objects of ``save_dict`` and the trainer itself (epoch and iteration), so a run
    killed mid-epoch restarts, with ``resume=True``, at the start of the epoch it did not finish. The trainer is
    added when the handler is attached, which keeps bundle configs free of reference cycles. Put this handler
    after the ``ValidationHandler`` so that the saved state includes the epoch's validation (e.g. the best-model
    saver's record of the best metric). In a distributed run every rank loads the checkpoint; rank 0 writes it.

    Args:
        ckpt_dir: folder of the checkpoints.
        save_dict: objects with ``state_dict``/``load_state_dict`` besides the trainer: network, optimizer,
            lr scheduler, best-model saver.
        resume: load the latest checkpoint of ``ckpt_dir`` when the trainer starts (a string flag such as
            ``"false"`` from the command line is read as a boolean).
        map_location: where to map the loaded tensors, e.g. the training device.

    Raises:
        FileNotFoundError: on attach, when resuming is asked for and ``ckpt_dir`` has no epoch checkpoint.
    """

    def __init__(self, ckpt_dir: str, save_dict: dict[str, Any], resume: Any = False, map_location: Any = None):
        if "trainer" in save_dict:
            raise ValueError("save_dict must not contain 'trainer': the trainer is added when the handler is attached.")
        self.ckpt_dir = ckpt_dir
        self.save_dict = dict(save_dict)
        self.resume = as_bool(resume)
        self.map_location = map_location

    def attach(self, trainer: Engine) -> None:
        """Attach the loader (when resuming) and the saver to ``trainer``."""
        objects = {**self.save_dict, "trainer": trainer}
        saver = AtomicCheckpointSaver(
            save_dir=self.ckpt_dir, save_dict=objects, save_interval=1, n_saved=1, epoch_level=True
        )
        disk_saver = saver._interval_checkpoint.save_handler
        if not self.resume:
            disk_saver.keep_existing = EPOCH_CHECKPOINT
        else:
            path = latest_checkpoint(self.ckpt_dir)
            CheckpointLoader(load_path=path, load_dict=objects, map_location=self.map_location).attach(trainer)
            # the resumed checkpoint is the one to replace at the next epoch (only the latest is kept)
            epoch = int(os.path.basename(path)[len("checkpoint_epoch=") : -len(".pt")])
            saver._interval_checkpoint.load_state_dict({"_saved": [(epoch, os.path.basename(path))]})
        saver.attach(trainer)
