# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The pieces that every segmentation bundle of this project shares, so that bundle configs name them in a line.

Each function returns ordinary MONAI objects (transforms, handlers); the bundle config passes every value that
differs between bundles (intensity transform, folders, intervals) explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import (
    CheckpointLoader,
    LrScheduleHandler,
    MetricsSaver,
    StatsHandler,
    TensorBoardImageHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.transforms import Activationsd, AsDiscreted, Compose, RandSpatialCropd
from monai.utils import ensure_tuple

from pyconv_monai.handlers import ValidationEarlyStopHandler

__all__ = [
    "load_transforms",
    "augmentation",
    "binary_postprocessing",
    "train_handlers",
    "validation_handlers",
    "evaluation_handlers",
    "case_names",
]


def load_transforms(intensity: Callable | Sequence[Callable] = (), label_threshold: float | None = None) -> list:
    """Load a datalist item as ``(1, H, W)`` image and binary label, then apply the bundle's intensity transform.

    Args:
        intensity: the bundle's intensity transform(s) for ``image`` (CT window, EM normalisation, scaling).
        label_threshold: see :class:`pyconv_monai.transforms.BinarizeLabeld` (``None``: masks must be binary).

    Returns:
        ``[LoadSlice2Dd, *intensity, BinarizeLabeld]``.
    """
    from pyconv_monai.transforms import BinarizeLabeld, LoadSlice2Dd

    return [LoadSlice2Dd(keys=("image", "label")), *ensure_tuple(intensity), BinarizeLabeld("label", label_threshold)]


def augmentation(
    name: str | None = "pyconvunet", patch_size: Sequence[int] | None = None, keys: Sequence[str] = ("image", "label")
) -> list:
    """Random training transforms: an optional random patch, then the paper's augmentation.

    Args:
        name: ``"pyconvunet"`` (flips, 90/180 degree rotations), ``"unet"`` (shifts, rotations, elastic
            deformation, gray values) or ``None``.
        patch_size: train on random patches of this size instead of whole slices (``None``: whole slices, as
            the paper).
        keys: keys to transform together.

    Raises:
        ValueError: for an unknown augmentation name.
    """
    from pyconv_monai.transforms import pyconvunet_augmentation, unet_augmentation

    out: list = []
    if patch_size is not None:
        out.append(RandSpatialCropd(keys=keys, roi_size=list(patch_size), random_size=False))
    if name == "pyconvunet":
        out.append(pyconvunet_augmentation(keys))
    elif name == "unet":
        out.append(unet_augmentation(keys))
    elif name is not None:
        raise ValueError(f"unknown augmentation {name!r}; choose 'pyconvunet', 'unet' or None.")
    return out


def binary_postprocessing(threshold: float = 0.5) -> Compose:
    """Sigmoid, threshold and two-channel one-hot (background, foreground) of ``pred`` and ``label``.

    The two channels let ``MeanIoUHandler(include_background=True)`` report the paper's MIoU (mean of background
    and foreground IoU) and ``MeanDice(include_background=False)`` the foreground Dice.

    Args:
        threshold: probability above which a pixel is foreground.
    """
    return Compose(
        [
            Activationsd(keys="pred", sigmoid=True),
            AsDiscreted(keys="pred", threshold=threshold),
            AsDiscreted(keys=("pred", "label"), to_onehot=2),
        ]
    )


def _foreground(key: str) -> Callable[[Any], list[torch.Tensor]]:
    """Pick the foreground channel of ``key`` of every item of a decollated batch or output, for TensorBoard."""

    def pick(items: Any) -> list[torch.Tensor]:
        return [item[key][-1:] for item in items]

    return pick


def _image_and_label(batch: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [b["image"] for b in batch], [b["label"] for b in batch]


def case_names(batch: Any) -> list[dict[str, str]]:
    """Per-item names for ``MetricsSaver``: the datalist's ``case`` (slices of one stack share a file name)."""
    return [{"filename_or_obj": str(b.get("case", b["image"].meta.get("filename_or_obj", "")))} for b in batch]


def train_handlers(
    validator: Engine,
    output_dir: str,
    lr_scheduler: Any = None,
    val_interval: int = 1,
    checkpoint: Any = None,
    early_stop_patience: int = 0,
    key_metric: str = "val_mean_dice",
    progress: bool = True,
    extra: Sequence[Any] = (),
) -> list:
    """Handlers of the training engine, in the order they must run at the end of an epoch.

    Validation runs first, so that the learning-rate schedule, early stopping and the latest checkpoint (which
    also stores the best-model saver's state) see this epoch's metric; the checkpoint comes last.

    Args:
        validator: the evaluator.
        output_dir: TensorBoard log folder.
        lr_scheduler: an epoch-level learning-rate scheduler, or ``None``.
        val_interval: validate every this many epochs.
        checkpoint: the handler of the latest checkpoint and of resuming
            (:class:`pyconv_monai.handlers.LatestCheckpointHandler`), or ``None``.
        early_stop_patience: stop after this many validations without improvement of ``key_metric`` (0: never).
        key_metric: the validator's key metric name.
        progress: show a progress bar with ETA for each epoch.
        extra: more handlers, attached first.
    """
    handlers: list = list(extra)
    handlers.append(ValidationHandler(validator=validator, interval=val_interval, epoch_level=True))
    if int(early_stop_patience) > 0:
        handlers.append(ValidationEarlyStopHandler(validator, key_metric, int(early_stop_patience)))
    if lr_scheduler is not None:
        handlers.append(LrScheduleHandler(lr_scheduler=lr_scheduler, print_lr=True))
    loss = from_engine(["loss"], first=True)
    handlers.append(StatsHandler(tag_name="train_loss", output_transform=loss))
    handlers.append(TensorBoardStatsHandler(log_dir=output_dir, tag_name="train_loss", output_transform=loss))
    if progress:
        from ignite.handlers import ProgressBar

        handlers.append(ProgressBar(persist=False, desc="train"))
    if checkpoint is not None:
        handlers.append(checkpoint)
    return handlers


def validation_handlers(
    output_dir: str, best_model_saver: Any = None, log_images: bool = True, extra: Sequence[Any] = ()
) -> list:
    """Handlers of the validation engine: metric logging, TensorBoard scalars and images, best-model saving.

    Args:
        output_dir: TensorBoard log folder.
        best_model_saver: the saver of the best model by key metric (``models/model.pt``), or ``None``.
        log_images: log image, label and prediction (foreground) of the first validation item to TensorBoard.
        extra: more handlers, attached first.
    """
    handlers: list = list(extra)
    handlers.append(StatsHandler(iteration_log=False))
    handlers.append(TensorBoardStatsHandler(log_dir=output_dir, iteration_log=False))
    if log_images:
        handlers.append(
            TensorBoardImageHandler(
                log_dir=output_dir, batch_transform=_image_and_label, output_transform=_foreground("pred")
            )
        )
    if best_model_saver is not None:
        handlers.append(best_model_saver)
    return handlers


def evaluation_handlers(
    output_dir: str, ckpt_file: str, network: torch.nn.Module, metrics: Sequence[str], device: Any = "cpu"
) -> list:
    """Handlers of a stand-alone evaluation: load the weights, log, and write per-case metrics to CSV.

    ``MetricsSaver`` writes ``metrics.csv`` (means) and, per metric, ``<metric>_raw.csv`` (one row per case and
    class) and ``<metric>_summary.csv`` (mean, median, percentiles) into ``output_dir``.

    Args:
        output_dir: folder of the CSV files.
        ckpt_file: the model weights to evaluate (``models/model.pt``).
        network: the network to load them into.
        metrics: names of the evaluator's metrics to save.
        device: where to map the weights.

    Raises:
        FileNotFoundError: when ``ckpt_file`` does not exist.
    """
    if not os.path.isfile(ckpt_file):
        raise FileNotFoundError(f"no model weights at {ckpt_file}: train the bundle first or pass --ckpt_file.")
    return [
        CheckpointLoader(load_path=ckpt_file, load_dict={"model": network}, map_location=device),
        StatsHandler(iteration_log=False),
        MetricsSaver(
            save_dir=output_dir,
            metrics=list(metrics),
            metric_details=list(metrics),
            batch_transform=case_names,
            summary_ops="*",
        ),
    ]
