# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Model files trusted only by their real SHA-256: a sidecar ``<file>.sha256`` records the file's own hash and key.

A cached ONNX model (or OpenVINO compiled blob) is used only when its sidecar names the expected key (the SHA-256 of
the network's weights and export settings, :func:`pyconv_monai.runtime.network_digest`) *and* the file's bytes hash
to the SHA-256 the sidecar records. A file edited, truncated or swapped after it was written fails the check and is
not used (it is rebuilt in the cache folder; a user's file, such as a bundle's ``models/model.onnx``, is never
overwritten). The verified bytes are what is returned, so nothing is read twice between the check and the use.

The default cache folder is per user: ``$PYCONV_MONAI_ONNX_CACHE`` if set (``""``, ``"off"`` or ``"none"``: no
cache, exports stay in memory), else ``$XDG_CACHE_HOME/pyconv-monai``, else ``~/.cache/pyconv-monai``. Writes are
atomic (a temporary file in the same folder, then renamed; the sidecar after its file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile

__all__ = [
    "ONNX_CACHE_ENV",
    "default_cache_dir",
    "resolve_cache_dir",
    "sha256_bytes",
    "sidecar_path",
    "read_verified",
    "write_verified",
]

logger = logging.getLogger(__name__)

ONNX_CACHE_ENV = "PYCONV_MONAI_ONNX_CACHE"
_OFF = ("", "off", "none", "0")


def default_cache_dir() -> str | None:
    """The per-user cache folder (see the module docstring); ``None`` when caching is switched off."""
    value = os.environ.get(ONNX_CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pyconv-monai")


def resolve_cache_dir(cache_dir: str | None) -> str | None:
    """The cache folder to use: ``cache_dir`` (``""``, ``"off"``, ``"none"``: no cache), else the per-user default."""
    if cache_dir is None:
        return default_cache_dir()
    return None if cache_dir.strip().lower() in _OFF else cache_dir


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sidecar_path(path: str | os.PathLike) -> str:
    """Where the hash of ``path`` is recorded: ``<path>.sha256``."""
    return os.fspath(path) + ".sha256"


def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_verified(path: str | os.PathLike, data: bytes, key: str) -> str:
    """Write ``data`` to ``path`` and its sidecar (``{"key", "sha256", "bytes"}``), both atomically.

    Args:
        path: the file to write (replaced if it exists).
        data: its content.
        key: what the content was built from (e.g. the network digest); checked again at load.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    _atomic_write(path, data)
    record = {"key": key, "sha256": sha256_bytes(data), "bytes": len(data)}
    _atomic_write(sidecar_path(path), (json.dumps(record, sort_keys=True) + "\n").encode())
    return path


def read_verified(path: str | os.PathLike, key: str) -> bytes | None:
    """The bytes of ``path`` if its sidecar names ``key`` and records the SHA-256 those bytes have, else ``None``.

    A missing file returns ``None`` quietly; a file without a sidecar, with another key, or whose bytes do not hash
    to the recorded SHA-256 returns ``None`` with one log line saying why (the caller rebuilds it).

    Args:
        path: the cached file.
        key: the key it must have been written for.

    Returns:
        the verified content, or ``None``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return None
    try:
        with open(sidecar_path(path), "rb") as f:
            record = json.loads(f.read().decode())
    except (OSError, ValueError) as e:
        logger.warning(f"{path}: no readable {os.path.basename(sidecar_path(path))} ({type(e).__name__}): not used")
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        logger.info(f"{path} was built from other weights or settings: not used")
        return None
    with open(path, "rb") as f:
        data = f.read()
    actual = sha256_bytes(data)
    if actual != record.get("sha256"):
        recorded = str(record.get("sha256"))[:16]
        logger.warning(f"{path}: SHA-256 {actual[:16]}... differs from the recorded {recorded}... (the file was "
                       "changed after it was written): not used")  # fmt: skip
        return None
    return data
