# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The bundles' training engine: MONAI's ``SupervisedTrainer`` that refuses to run on no data."""

from __future__ import annotations

import os
from typing import Any

from monai.engines import SupervisedTrainer

from .bundle import require_dataset

__all__ = ["SegmentationTrainer"]


class SegmentationTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose ``run`` stops with the data-set message when its data loader is empty.

    MONAI's workflow skips an empty data loader with a warning and returns: a bundle trained without its data set
    (MONAI FL's ``MonaiAlgo`` builds the trainer with ``initialize`` and calls ``trainer.run()`` itself, without the
    config's ``run`` and its ``require_dataset``) would "succeed" with 0 iterations. Building the trainer still works
    without the data (a property check, ``initialize``); only running it fails.

    Args:
        args: passed to ``SupervisedTrainer``.
        dataset_dir: the bundle's ``dataset_dir`` (named in the error).
        dataset_source: what the data set is and where to get it (the bundle's ``dataset_source``).
        kwargs: passed to ``SupervisedTrainer``.
    """

    def __init__(
        self, *args: Any, dataset_dir: str | os.PathLike | None = None, dataset_source: str = "", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.dataset_dir = dataset_dir
        self.dataset_source = dataset_source

    def run(self) -> None:
        """Train, as ``SupervisedTrainer.run``.

        Raises:
            FileNotFoundError: the data loader is empty and ``dataset_dir`` does not exist (the message says where to
                get the data set and how to pass it).
            ValueError: the data loader is empty although ``dataset_dir`` exists.
        """
        if self.state.epoch_length == 0:
            where = ""
            if self.dataset_dir is not None:
                require_dataset(self.dataset_dir, self.dataset_source)
                where = f" from {os.path.abspath(os.fspath(self.dataset_dir))}"
            what = f" This bundle's data set is {self.dataset_source}." if self.dataset_source else ""
            raise ValueError(f"no training cases{where}: the training data loader is empty.{what}")
        super().run()
