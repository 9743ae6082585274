# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What the bundles under ``bundles/`` share: transform recipes, paths and flags, distributed set-up, and the
inference runner."""

from pyconv_monai.utils import as_bool

from .bundle import bundle_root, require_dataset
from .distributed import ddp, distributed_device, init_distributed, is_main_process, main_process_only, rank
from .inference import InferenceError, SegmentationPredictor, load_weights, orientation
from .recipes import augmentation, case_names, load_transforms

__all__ = [
    "InferenceError",
    "SegmentationPredictor",
    "as_bool",
    "augmentation",
    "bundle_root",
    "case_names",
    "ddp",
    "distributed_device",
    "init_distributed",
    "is_main_process",
    "load_transforms",
    "load_weights",
    "main_process_only",
    "orientation",
    "rank",
    "require_dataset",
]
