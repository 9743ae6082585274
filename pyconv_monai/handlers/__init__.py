# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

from .checkpoint_loader import CheckedCheckpointLoader, load_checkpoint
from .checkpoint_saver import AtomicCheckpointSaver, AtomicDiskSaver
from .early_stop import ValidationEarlyStopHandler
from .latest_checkpoint import LatestCheckpointHandler, latest_checkpoint
from .metrics_history import MetricsHistorySaver
from .tensorboard import LazySummaryWriter

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "CheckedCheckpointLoader",
    "LatestCheckpointHandler",
    "LazySummaryWriter",
    "MetricsHistorySaver",
    "ValidationEarlyStopHandler",
    "latest_checkpoint",
    "load_checkpoint",
]
