# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What the bundles' configs call: transform recipes, the data-set check, distributed set-up, the training engine
(:class:`SegmentationTrainer`), the inference engine (:class:`SegmentationEvaluator`) and its handlers; ``export``
checks and zips a bundle."""

from pyconv_monai.utils import as_bool

from .bundle import require_dataset
from .checks import TrainingSetupError, check_overrides, check_training_labels, override_problems
from .distributed import (
    ddp,
    distributed_device,
    finalize_distributed,
    init_distributed,
    is_main_process,
    main_process_only,
    rank,
)
from .inference import (
    InferenceError,
    OutputFolderLock,
    RuntimeHandler,
    SegmentationEvaluator,
    VolumeTableWriter,
    load_checkpoint,
    require_cases,
)
from .recipes import augmentation, case_names, load_transforms
from .training import SegmentationTrainer

__all__ = [
    "InferenceError",
    "OutputFolderLock",
    "RuntimeHandler",
    "SegmentationEvaluator",
    "SegmentationTrainer",
    "VolumeTableWriter",
    "TrainingSetupError",
    "as_bool",
    "augmentation",
    "case_names",
    "check_overrides",
    "check_training_labels",
    "ddp",
    "distributed_device",
    "finalize_distributed",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_transforms",
    "main_process_only",
    "override_problems",
    "rank",
    "require_cases",
    "require_dataset",
]
