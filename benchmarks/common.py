# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""What the benchmark scripts share: where the data is, the command line they print, markdown tables, Dice, and
the atomic write of their ``--out`` file."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pyconv_monai.utils import atomic_write

__all__ = ["REPO", "command_line", "dice", "markdown_table", "print_and_write", "shared_data", "write_text"]

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The staged real data sets: ``$PYCONV_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("PYCONV_SHARED_DATA", REPO.parent / "shared" / "data"))


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this script, ``python benchmarks/x.py --flag value`` (shell-quoted).

    Args:
        argv: the full argument vector, script first (default ``sys.argv``).
    """
    return "python " + " ".join(shlex.quote(a) for a in (sys.argv if argv is None else argv))


def markdown_table(header: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a markdown table.

    Args:
        header: the column titles.
        align: one letter per column, ``l`` (left) or ``r`` (right, for numbers).
        rows: the cells of each row, already formatted (anything ``str`` turns into the cell's text).

    Returns:
        the header line, the alignment line (``|---|---:|``) and one line per row.

    Raises:
        ValueError: ``align`` or a row has not one entry per column.
    """
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} must have one letter l or r for each of the {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {cells} has {len(cells)} cells, the table {len(header)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def dice(pred: np.ndarray, label: np.ndarray) -> float:
    """Dice 2|A∩B| / (|A| + |B|) of two binary masks (non-zero is foreground); 1 when both are empty."""
    p, g = np.asarray(pred) != 0, np.asarray(label) != 0
    total = int(p.sum()) + int(g.sum())
    return 2.0 * int((p & g).sum()) / total if total else 1.0


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a report (``--out``) atomically: a killed run leaves the previous file, never half of the new one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(text)


def print_and_write(text: str, out: str | os.PathLike | None = None) -> None:
    """Print a benchmark's table, and write it to ``out`` (``--out``) too when given."""
    print(text)
    if out:
        write_text(out, text)
