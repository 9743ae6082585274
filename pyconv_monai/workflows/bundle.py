# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Small helpers that bundle configs call: where the bundle is, and a clear stop when its data set is missing."""

from __future__ import annotations

import ast
import inspect
import logging
import os
import sys
from pathlib import Path

__all__ = ["bundle_root", "require_dataset"]

logger = logging.getLogger(__name__)


def _config_root_from_stack() -> Path | None:
    from monai.bundle import ConfigWorkflow

    for frame_info in inspect.stack()[2:]:
        owner = frame_info.frame.f_locals.get("self")
        if isinstance(owner, ConfigWorkflow):
            return Path(owner.config_root_path)
    return None


def _config_root_from_argv(argv: list[str]) -> Path | None:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value:
            if value.strip().startswith("["):
                value = ast.literal_eval(value)[0]
            return Path(value).parent
    return None


def bundle_root(default: str = ".") -> str:
    """Folder of the bundle whose config is running, whatever the working directory.

    It is the parent of the ``configs`` folder holding the config file given to ``python -m monai.bundle`` (found
    from the running ``ConfigWorkflow``, else from ``--config_file`` on the command line). Config files use it as
    ``"bundle_root": "$pyconv_monai.workflows.bundle_root()"`` so that ``models/`` and ``eval/`` land inside the
    bundle both when run from the repository root and from the bundle folder. ``--bundle_root DIR`` overrides it.

    Args:
        default: returned when no bundle config is being run (e.g. a config parsed from Python).

    Returns:
        the absolute path of the bundle folder.
    """
    root = _config_root_from_stack() or _config_root_from_argv(sys.argv)
    if root is None:
        return os.path.abspath(default)
    root = root.resolve()
    return str(root.parent if root.name == "configs" else root)


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
        f"no data set at {path}.{what} Get it, then pass its folder with --dataset_dir, e.g. python -m monai.bundle "
        "run --config_file <bundle>/configs/train.json --dataset_dir /path/to/data (pyconv-monai segment takes the "
        "input folder as its first argument), or put it at the path above."
    )
