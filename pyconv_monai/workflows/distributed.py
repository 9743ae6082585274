# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What ``multi_gpu_train.json`` needs to run the same bundle under ``torchrun`` on GPUs (NCCL) or CPUs (gloo)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from monai.handlers import CheckpointLoader, LrScheduleHandler, ValidationHandler
from pyconv_monai.handlers import AtomicCheckpointSaver, LatestCheckpointHandler, ValidationEarlyStopHandler
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "init_distributed",
    "finalize_distributed",
    "distributed_device",
    "ddp",
    "rank",
    "is_main_process",
    "main_process_only",
]

# handlers that change a run's state: every rank keeps them (validation, learning-rate schedule, checkpoints, stop)
STATE_HANDLERS = (
    ValidationHandler,
    LrScheduleHandler,
    CheckpointLoader,
    AtomicCheckpointSaver,
    LatestCheckpointHandler,
    ValidationEarlyStopHandler,
)


def init_distributed() -> None:
    """Join the ``torchrun`` process group: NCCL with one GPU per process, gloo on CPUs."""
    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        dist.init_process_group(backend="nccl")
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    else:
        dist.init_process_group(backend="gloo")


def finalize_distributed() -> None:
    """End the process group (the multi-GPU configs' ``finalize``) and tell ignite, which caches it: without
    ``idist.sync()`` a later run in the same process (MONAI FL, a notebook, a test) would ask a destroyed group for its
    rank and fail with "Default process group has not been initialized".

    Every rank waits at a barrier first: a rank that tore its gloo group down while another was still finishing its
    last collective (rank 0 writes the metrics after the gather) could abort that rank at exit ("terminate called
    without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    idist.sync()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main_process() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return rank() == 0


def distributed_device() -> torch.device:
    """The device of this process: its GPU, or the CPU."""
    init_distributed()
    if torch.cuda.is_available():
        return torch.device(f"cuda:{torch.cuda.current_device()}")
    return torch.device("cpu")


def ddp(network: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """Wrap ``network`` (moved to ``device``) in ``DistributedDataParallel``, on GPUs or CPUs."""
    network = network.to(device)
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids)


def main_process_only(handlers: Sequence[Any] | None, keep: Sequence[type] | None = None) -> list | None:
    """``handlers`` on rank 0; on the other ranks only those that change the run's state.

    Every rank must validate (metrics are gathered across ranks), step the learning rate, load a resumed
    checkpoint and stop early together; only rank 0 logs and writes files (checkpoint savers write on rank 0
    by themselves).

    Args:
        handlers: the handlers of one engine.
        keep: handler types to keep on every rank; default: validation, learning-rate schedule, checkpoint
            loading and saving, early stopping.
    """
    if handlers is None:
        return None
    if is_main_process():
        return list(handlers)
    types = STATE_HANDLERS if keep is None else tuple(keep)
    return [h for h in handlers if isinstance(h, types)]
