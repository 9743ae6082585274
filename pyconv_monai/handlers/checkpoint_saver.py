# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""A ``CheckpointSaver`` that never leaves a corrupt or missing checkpoint behind, and never replaces earlier
weights silently."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver
from pyconv_monai.utils import preserve_existing

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver"]

logger = logging.getLogger(__name__)


class AtomicDiskSaver(DiskSaver):
    """ignite's atomic ``DiskSaver`` (temporary file, rename) with an fsync, a fixed filename, and removals that wait.

    ignite removes the previous checkpoint before writing the next one, so a process killed while saving would be
    left with none. Here removals wait until the new file is in place: with a fixed filename the new file simply
    replaces the old one; otherwise the old file is deleted right after the new one is written.

    Nothing is created, moved or written before the first save: the folder is made then, and files of an earlier
    run that this saver would replace are kept under a new name then (see ``keep_existing``), so that merely
    building a training workflow (a property check, MONAI FL, an IDE) changes no file. They are kept only once the
    new file is written and synced (a hard link to the old file, then the new file replaces it in one step): a
    failed save (a full disk) leaves every earlier file where and as it was.

    Args:
        dirname: folder of the checkpoints (created at the first save).
        filename: fixed file name to write instead of ignite's generated one, e.g. ``"model.pt"``.
        keep_existing: before the first save, keep files an earlier run left with
            :func:`pyconv_monai.utils.preserve_existing` (``model.pt`` becomes ``model.<timestamp>.pt``):
            ``True`` keeps the file this save writes; a regular expression (e.g. ``r"checkpoint_epoch=\\d+\\.pt"``)
            every file of ``dirname`` whose whole name matches it; ``False`` replaces them. :meth:`claim` turns it
            off (a resumed run owns the files).
    """

    def __init__(self, dirname: str | Path, filename: str | None = None, keep_existing: bool | str = False) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=False, require_empty=False)
        self.filename = filename
        self.keep_existing = keep_existing
        self._pending_removal: list[str] = []
        self._writing: str | None = None

    @staticmethod
    def _check_and_setup(dirname: Path, create_dir: bool, require_empty: bool) -> None:
        """Create nothing when built: the folder is made at the first save."""

    def claim(self) -> None:
        """Treat the files in ``dirname`` as this run's own (a resumed run): replace them without keeping them."""
        self.keep_existing = False

    def _keep_earlier_files(self, written: str) -> None:
        """Keep the earlier files (called once the new file is written, before it takes its name): the one it
        replaces as a hard link (it stays in place until replaced in one step), the others renamed."""
        if self.keep_existing is True:
            preserve_existing(str(self.dirname / written), link=True)
        elif isinstance(self.keep_existing, str) and self.dirname.is_dir():
            for name in sorted(os.listdir(self.dirname)):
                if re.fullmatch(self.keep_existing, name):
                    preserve_existing(str(self.dirname / name), link=name == written)
        self.keep_existing = False

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        written = self.filename or filename
        self._writing = written if self.keep_existing and self.save_on_rank == idist.get_rank() else None
        super().__call__(checkpoint=checkpoint, filename=written, metadata=metadata)
        for old in self._pending_removal:
            if old != written and (self.dirname / old).exists():
                super().remove(old)
        self._pending_removal.clear()

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        """ignite's atomic save (temporary file in ``dirname``, ``os.replace``) plus what it lacks: the folder is
        made here, at the first save, and the temporary file is flushed to disk (``fsync``) before the rename, so
        that a power loss cannot leave an empty file under the final name."""

        def save_and_sync(obj: Mapping, f: Any, **kwargs: Any) -> None:
            func(obj, f, **kwargs)
            f.flush()
            os.fsync(f.fileno())
            if getattr(self, "_writing", None):  # written and synced: now keep what it replaces
                self._keep_earlier_files(self._writing)
                self._writing = None

        self.dirname.mkdir(parents=True, exist_ok=True)
        super()._save_func(checkpoint, path, save_and_sync)

    def remove(self, filename: str) -> None:
        """Remove ``filename`` after the next successful save (never, for a fixed filename: it is replaced)."""
        if self.filename is None:
            self._pending_removal.append(filename)


def _remove_empty_dirs(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` (included) while they are empty."""
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            return
        if folder == top:
            return
        folder = folder.parent


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose files are written atomically, and whose best-metric state can be resumed.

    MONAI's saver writes in place (``atomic=False``), so a process killed while saving leaves a truncated file;
    this one writes a temporary file and renames it. It also has a ``state_dict()`` with the best key-metric
    checkpoints kept so far, so that saving it inside the "latest" checkpoint and loading it on resume keeps a
    resumed run from replacing the best model with a worse one. The folder is created at the first save, not
    when the saver is built.

    Args:
        args: the arguments of ``CheckpointSaver``.
        keep_existing: at its first save, keep a file of a fixed name (``key_metric_filename``, ``final_filename``)
            that an earlier run left, as ``<name>.<timestamp>.pt``; loading a non-empty state (a resumed run) turns
            it off, since the file is then the resumed run's own.
        key_metric_min: a key-metric checkpoint of a fixed name (the best model, ``model.pt``) never replaces an
            existing file for a score that is not finite or not above this (default 0: a validation Dice of 0 or NaN,
            e.g. from empty labels, never replaces the shipped ``model.pt``); where no file exists it is written,
            with a warning. ``None`` saves any score. Not applied with ``key_metric_negative_sign``.
        kwargs: the keyword arguments of ``CheckpointSaver``.
    """

    def __init__(
        self, *args: Any, keep_existing: bool = False, key_metric_min: float | None = 0.0, **kwargs: Any
    ) -> None:
        self.key_metric_min = None if kwargs.get("key_metric_negative_sign", False) else key_metric_min
        save_dir = Path(kwargs.get("save_dir", args[0] if args else ".")).absolute()
        first_missing = next((p for p in [*reversed(save_dir.parents), save_dir] if not p.exists()), None)
        super().__init__(*args, **kwargs)
        if first_missing is not None:  # MONAI's disk savers made save_dir when built: undo, the first save makes it
            _remove_empty_dirs(save_dir, first_missing)
        self._disk_savers: list[AtomicDiskSaver] = []
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:  # keep MONAI's fixed file names (e.g. "model.pt"), write them atomically
                fixed_name = getattr(checkpoint.save_handler, "filename", None)
                keep = bool(keep_existing) and fixed_name is not None
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed_name, keep_existing=keep)
                self._disk_savers.append(checkpoint.save_handler)

    def metrics_completed(self, engine: Engine) -> None:
        """Save the best model; a score that is not finite or not above ``key_metric_min`` never replaces an existing
        file (a warning says so)."""
        if self._key_metric_checkpoint is not None and self.key_metric_min is not None:
            score = self._key_metric_checkpoint.score_function(engine)
            try:
                value = float(score)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or value <= self.key_metric_min:
                name = getattr(self._key_metric_checkpoint.save_handler, "filename", None)
                target = Path(self.save_dir) / name if name is not None else None
                if target is not None and target.exists():
                    logger.warning(
                        f"validation key metric {score} is not above {self.key_metric_min:g}: {target} is kept, "
                        "not replaced (empty labels, or a model that predicts nothing)"
                    )
                    return
                logger.warning(f"validation key metric {score} is not above {self.key_metric_min:g}; saved anyway "
                               "(there are no earlier weights), but check the labels")  # fmt: skip
        super().metrics_completed(engine)

    def state_dict(self) -> dict:
        """Best key-metric checkpoints kept so far (empty when the key metric is not saved)."""
        return {} if self._key_metric_checkpoint is None else self._key_metric_checkpoint.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned; the files it lists are then this (resumed) run's own."""
        if self._key_metric_checkpoint is not None and state_dict:
            self._key_metric_checkpoint.load_state_dict(state_dict)
            if self._key_metric_checkpoint._saved:
                for disk_saver in self._disk_savers:
                    disk_saver.claim()
