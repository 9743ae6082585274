# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The per-case results table of an inference run (``volumes.csv``), written atomically."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pyconv_monai.utils import atomic_write

__all__ = ["FORMULA_STARTS", "VOLUME_COLUMNS", "escape_cell", "write_csv"]

# the columns of volumes.csv, in order (see docs/inference.md)
VOLUME_COLUMNS = (
    "case",
    "input",
    "kind",
    "series_uid",
    "status",
    "message",
    "slices",
    "foreground_voxels",
    "voxel_volume_mm3",
    "volume_ml",
    "mask",
    "dicom_seg",
)


# what a spreadsheet reads as a formula when a cell starts with it (CSV/formula injection), and plain numbers
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def escape_cell(text: str) -> str:
    """A text cell made safe to open in a spreadsheet: a leading ``'`` where it starts with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return (e.g. a SeriesInstanceUID ``=HYPERLINK(...)``); plain numbers such as ``-3.5``
    are kept as they are."""
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return value
    return escape_cell(str(value))


def write_csv(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    columns: Sequence[str] = VOLUME_COLUMNS,
    overwrite: bool = False,
) -> str:
    """Write ``rows`` as a CSV file with a header line; ``None`` becomes an empty cell, floats get 6 digits, text
    that a spreadsheet would run as a formula gets a leading ``'`` (:func:`escape_cell`).

    Args:
        rows: one mapping per line; keys outside ``columns`` are ignored, missing ones are empty.
        path: the file.
        columns: the header.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: _cell(row.get(c)) for c in columns})
    return os.fspath(path)
