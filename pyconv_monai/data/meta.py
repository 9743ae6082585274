# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Keep MONAI's metadata tracking on where geometry is needed, even if a user switched it off globally."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from monai.data import get_track_meta, set_track_meta

__all__ = ["tracking_meta"]

_LOCK = threading.Lock()
_STATE = {"users": 0, "saved": True}


@contextlib.contextmanager
def tracking_meta() -> Iterator[bool]:
    """Track MetaTensor metadata inside the block even where ``monai.data.set_track_meta(False)`` switched it off.

    The loaders check geometry on affines, so they need it; the block yields the user's setting so that outputs can
    be plain tensors where the user asked for them. Nested and concurrent blocks (threads) share one switch.

    Yields:
        whether metadata tracking was on before the outermost block.
    """
    with _LOCK:
        if _STATE["users"] == 0:
            _STATE["saved"] = get_track_meta()
            set_track_meta(True)
        _STATE["users"] += 1
        saved = bool(_STATE["saved"])
    try:
        yield saved
    finally:
        with _LOCK:
            _STATE["users"] -= 1
            if _STATE["users"] == 0:
                set_track_meta(bool(_STATE["saved"]))
