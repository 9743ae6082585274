# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The per-case results table of an inference run (``volumes.csv``), written atomically."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pyconv_monai.utils import atomic_write

__all__ = ["VOLUME_COLUMNS", "write_csv"]

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


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    columns: Sequence[str] = VOLUME_COLUMNS,
    overwrite: bool = False,
) -> str:
    """Write ``rows`` as a CSV file with a header line; ``None`` becomes an empty cell, floats get 6 digits.

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
