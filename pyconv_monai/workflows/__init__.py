# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What the bundles under ``bundles/`` share: recipes of handlers and post-processing, paths, distributed set-up,
and the inference runner."""

from .bundle import as_bool, bundle_root, latest_checkpoint, preserve_existing
from .distributed import ddp, distributed_device, init_distributed, is_main_process, main_process_only, rank
from .inference import InferenceError, SegmentationPredictor, load_weights, orientation
from .recipes import (
    augmentation,
    binary_postprocessing,
    case_names,
    evaluation_handlers,
    load_transforms,
    train_handlers,
    validation_handlers,
)

__all__ = [
    "InferenceError",
    "SegmentationPredictor",
    "as_bool",
    "augmentation",
    "load_transforms",
    "binary_postprocessing",
    "bundle_root",
    "case_names",
    "ddp",
    "distributed_device",
    "evaluation_handlers",
    "init_distributed",
    "is_main_process",
    "latest_checkpoint",
    "load_weights",
    "main_process_only",
    "orientation",
    "preserve_existing",
    "rank",
    "train_handlers",
    "validation_handlers",
]
