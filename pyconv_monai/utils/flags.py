# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Flags given on the command line as text."""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]


def as_bool(value: Any) -> bool:
    """Read a command-line flag: ``True``, ``"true"``, ``"1"``, ``"yes"`` are true; ``False``, ``"false"``, ``"0"``,
    ``"no"``, ``""`` are false.

    ``python -m monai.bundle run ... --resume false`` passes the string ``"false"``, which Python would call true.

    Raises:
        ValueError: for any other string.
    """
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "1", "yes", "y", "on"):
            return True
        if v in ("false", "0", "no", "n", "off", "", "none"):
            return False
        raise ValueError(f"expected a boolean flag (true/false), got {value!r}.")
    return bool(value)
