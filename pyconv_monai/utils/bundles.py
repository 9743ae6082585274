# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Where the shipped bundles are, for a source checkout, an editable install and a wheel install alike.

The bundles live in the repository's ``bundles/`` folder. A wheel (``pip install .``, not ``-e``) ships them as
package data, ``pyconv_monai/bundles/<name>/`` (configs, docs, LICENSE and ``models/model.pt``; see ``setup.py``).
:func:`bundles_root` is the one place that decides which of the two is used (the console script names bundles with
it, ``workflows.export`` finds the metadata schemas with it).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundle_dir", "bundles_root", "list_bundles"]

_PACKAGE = Path(__file__).resolve().parents[1]  # the pyconv_monai folder


def bundles_root() -> Path:
    """The folder that holds the shipped bundles (one sub-folder per bundle, and ``schemas/``).

    A wheel install ships them inside the package, as ``<site-packages>/pyconv_monai/bundles``; a source checkout
    and an editable install (``pip install -e .``) use the repository's ``bundles/`` beside the package folder.

    Returns:
        ``pyconv_monai/bundles`` when it exists (installed from a wheel), else ``<repository>/bundles`` (it may not
        exist, e.g. a wheel built without package data: :func:`bundle_dir` then says so).
    """
    installed = _PACKAGE / "bundles"
    return installed if installed.is_dir() else _PACKAGE.parent / "bundles"


def list_bundles(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the bundles that have an inference config.

    Args:
        root: folder to look in; default :func:`bundles_root`.

    Returns:
        the sorted folder names under ``root`` holding ``configs/inference.json`` (empty if ``root`` is missing).
    """
    root = bundles_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "configs" / "inference.json").is_file())


def bundle_dir(bundle: str | os.PathLike) -> Path:
    """The folder of a bundle given by path or by the name of a shipped bundle.

    Args:
        bundle: a bundle folder (holding ``configs/inference.json``) or a name from :func:`list_bundles`.

    Returns:
        the bundle folder, absolute.

    Raises:
        FileNotFoundError: neither a bundle folder nor a shipped bundle's name.
    """
    path = Path(bundle).expanduser()
    if (path / "configs" / "inference.json").is_file():
        return path.resolve()
    root = bundles_root()
    named = root / str(bundle)
    if (named / "configs" / "inference.json").is_file():
        return named.resolve()
    known = ", ".join(list_bundles(root)) or f"none found in {root}"
    raise FileNotFoundError(
        f"no bundle {str(bundle)!r}: give a bundle folder (holding configs/inference.json) or one of: {known}."
    )
