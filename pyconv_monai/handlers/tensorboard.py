# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""A TensorBoard ``SummaryWriter`` that creates its event file when it first writes, not when it is built."""

from __future__ import annotations

import atexit
from typing import Any

from torch.utils.tensorboard import SummaryWriter

__all__ = ["LazySummaryWriter"]


class LazySummaryWriter(SummaryWriter):
    """``torch.utils.tensorboard.SummaryWriter`` whose folder and event file appear at the first write.

    MONAI's TensorBoard handlers create a writer, and with it ``log_dir`` and an event file, when they are built;
    a bundle's handlers are built whenever its training workflow is (a property check, MONAI FL, an IDE). Given
    this writer as ``summary_writer``, the handlers write nothing until training logs its first value. One writer
    can serve all the handlers of a run (one event file); it is closed (flushed) when the process exits.

    Args:
        log_dir: folder of the event file.
        kwargs: the other arguments of ``SummaryWriter`` (``flush_secs``, ``max_queue``, ...).
    """

    def __init__(self, log_dir: str, **kwargs: Any) -> None:
        self._building = True
        super().__init__(log_dir=log_dir, **kwargs)
        self._building = False

    def _get_file_writer(self) -> Any:
        if self._building:  # SummaryWriter.__init__ opens the event file; defer that to the first write
            return None
        if self.file_writer is None:
            atexit.register(self.close)
        return super()._get_file_writer()
