# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""A ``CheckpointSaver`` that never leaves a corrupt or missing checkpoint behind."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver"]


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes atomically (temporary file, fsync, rename) and can use a fixed filename.

    ignite removes the previous checkpoint before writing the next one, so a process killed while saving would be
    left with none. Here removals wait until the new file is in place: with a fixed filename the new file simply
    replaces the old one; otherwise the old file is deleted right after the new one is written.

    Args:
        dirname: folder of the checkpoints (created if missing).
        filename: fixed file name to write instead of ignite's generated one, e.g. ``"model.pt"``.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename
        self._pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        written = self.filename or filename
        super().__call__(checkpoint=checkpoint, filename=written, metadata=metadata)
        for old in self._pending_removal:
            if old != written and (self.dirname / old).exists():
                super().remove(old)
        self._pending_removal.clear()

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dirname, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                func(checkpoint, f, **self.kwargs)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask | stat.S_IRUSR | stat.S_IWUSR)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def remove(self, filename: str) -> None:
        """Remove ``filename`` after the next successful save (never, for a fixed filename: it is replaced)."""
        if self.filename is None:
            self._pending_removal.append(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` whose files are written atomically, and whose best-metric state can be resumed.

    MONAI's saver writes in place (``atomic=False``), so a process killed while saving leaves a truncated file;
    this one writes a temporary file and renames it. It also has a ``state_dict()`` with the best key-metric
    checkpoints kept so far, so that saving it inside the "latest" checkpoint and loading it on resume keeps a
    resumed run from replacing the best model with a worse one. Arguments are those of ``CheckpointSaver``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:  # keep MONAI's fixed file names (e.g. "model.pt"), write them atomically
                fixed_name = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed_name)

    def state_dict(self) -> dict:
        """Best key-metric checkpoints kept so far (empty when the key metric is not saved)."""
        return {} if self._key_metric_checkpoint is None else self._key_metric_checkpoint.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if self._key_metric_checkpoint is not None and state_dict:
            self._key_metric_checkpoint.load_state_dict(state_dict)
