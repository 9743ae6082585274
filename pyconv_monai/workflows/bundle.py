# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What bundle configs call before they need their data: a clear stop when the data set is missing."""

from __future__ import annotations

import os

__all__ = ["require_dataset"]


def require_dataset(dataset_dir: str | os.PathLike, source: str = "") -> str:
    """Stop with a message that says where to get the data set and how to pass it, when ``dataset_dir`` is missing.

    Bundle configs call it first in ``run``, when the data is needed: building the workflow (``initialize``, a
    property check, MONAI FL) works without the data set (its datalists are then empty).

    Args:
        dataset_dir: the bundle's ``dataset_dir``.
        source: what the data set is and where to get it (the bundle's ``dataset_source``).

    Returns:
        ``dataset_dir``, when it exists.

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist.
    """
    path = os.path.abspath(os.fspath(dataset_dir))
    if os.path.exists(path):
        return os.fspath(dataset_dir)
    what = f" This bundle's data set is {source}." if source else ""
    raise FileNotFoundError(
        f"no data set at {path}.{what} Get it, then pass its folder with --dataset_dir, e.g. from the bundle folder "
        "python -m monai.bundle run --config_file configs/train.json --dataset_dir /path/to/data (pyconv-monai "
        "segment takes the input folder as its first argument), or put it at the path above."
    )
