# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Output paths that cannot escape the output folder, unique names, and atomic, no-clobber file writes.

Output names come from DICOM tags and file names, which anyone can set: ``PatientID = "../../x"`` must not make a
tool write outside its output folder. :func:`safe_name` turns any text into one portable file-name component,
:class:`UniqueNames` keeps names of one run distinct, :func:`output_path` refuses any path that would leave the
folder, and :func:`atomic_write` writes through a temporary file in the same folder, so that a killed run leaves
no partial output under the final name, and an existing file is only replaced when asked;
:func:`preserve_existing` keeps a file that a new run would replace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import time
import unicodedata
import uuid
from collections.abc import Iterator

__all__ = [
    "TEMP_PREFIX",
    "UniqueNames",
    "atomic_write",
    "output_path",
    "preserve_existing",
    "remove_stale_temps",
    "safe_name",
]

logger = logging.getLogger(__name__)

# temporary files of atomic_write start with this; nothing else in an output folder does
TEMP_PREFIX = ".pyconv-tmp-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_SEPARATORS = re.compile(r"[_-]{2,}")
# names Windows refuses whatever the extension (outputs may be copied to a Windows share)
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)})


def safe_name(text: object, max_length: int = 64, default: str = "case") -> str:
    """Turn any text (a DICOM tag value, a file name) into one safe, portable file-name component.

    Accents are dropped to ASCII; every run of characters other than letters, digits, ``.``, ``_`` and ``-``
    (path separators, spaces, control characters, ...) becomes ``_``; runs of dots become one dot, so ``..``
    never survives; leading and trailing ``.``, ``_``, ``-`` are removed (no hidden files); Windows device
    names (``CON``, ``NUL``, ...) get a ``_`` prefix; the result is cut to ``max_length`` characters.

    Args:
        text: the value; ``None`` and empty values give ``default``.
        max_length: longest result (at least 8).
        default: returned (made safe) when nothing safe is left; ``""`` returns ``""`` then.

    Returns:
        a name matching ``[A-Za-z0-9][A-Za-z0-9._-]*`` (or ``_`` + that for Windows device names), never ``.`` or
        ``..``; empty only when nothing is left and ``default`` is empty.
    """
    max_length = max(int(max_length), 8)
    value = "" if text is None else str(text)
    value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    value = _UNSAFE.sub("_", value)
    value = _DOTS.sub(".", value)
    value = _SEPARATORS.sub("_", value).strip("._-")
    value = value[:max_length].rstrip("._-")
    if not value:
        return safe_name(default, max_length, "case") if default else ""
    if value.split(".")[0].upper() in _RESERVED:
        value = ("_" + value)[:max_length]
    return value


class UniqueNames:
    """Hand out distinct names: the second request for ``name`` gets ``name_2``, the third ``name_3``, ...

    Names are compared case-insensitively, because macOS and Windows file systems do.
    """

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, name: str) -> str:
        """Reserve and return ``name`` or, if it is taken, the first free ``name_<n>``."""
        candidate, n = name, 1
        while candidate.lower() in self._used:
            n += 1
            candidate = f"{name}_{n}"
        self._used.add(candidate.lower())
        return candidate


def output_path(output_dir: str | os.PathLike, filename: str) -> str:
    """The absolute path of ``filename`` directly inside ``output_dir`` (resolved), checked to stay inside it.

    Files are only ever written to a temporary file in ``output_dir`` and then renamed or linked onto this path
    (:func:`atomic_write`), so a symbolic link already sitting at the path is replaced, never followed.

    Args:
        output_dir: the output folder (it need not exist yet).
        filename: one file name, e.g. ``safe_name(...) + "_seg.nii.gz"``.

    Raises:
        ValueError: ``filename`` is empty, ``.`` or ``..``, or holds a path separator or a NUL character.
    """
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if not filename or filename in (".", "..") or "\x00" in filename or any(s in filename for s in separators):
        raise ValueError(f"refusing output file name {filename!r}: not a single file name.")
    root = os.path.realpath(os.fspath(output_dir))
    path = os.path.join(root, filename)
    if os.path.dirname(path) != root:  # cannot happen after the checks above; kept as the invariant
        raise ValueError(f"refusing output path {path!r}: it is not directly inside {root}.")
    return path


def _suffix(name: str) -> str:
    """The extension to keep on a temporary file (libraries pick the format from it): ``.nii.gz``, ``.tif``, ..."""
    lower = name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if lower.endswith(double):
            return name[-len(double) :]
    return os.path.splitext(name)[1]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Write a file under a temporary name in its folder, then move it to ``path`` in one step.

    Yields the temporary path to write to (same folder, same extension, hidden, starting with
    :data:`TEMP_PREFIX`). When the block ends without error the file is moved to ``path``: with ``overwrite``
    by ``os.replace`` (atomic), otherwise by a hard link that fails if ``path`` exists (atomic and no-clobber;
    file systems without hard links fall back to an existence check and ``os.replace``). On error, and if the
    block wrote nothing, the temporary file is removed and ``path`` is untouched.

    Args:
        path: the final file.
        overwrite: replace an existing ``path``.

    Raises:
        FileExistsError: ``path`` exists (before or after writing) and ``overwrite`` is False.
        FileNotFoundError: the block did not create the temporary file.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "output exists (pass overwrite to replace it)", path)
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{name[:80]}{_suffix(name)}")
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(f"nothing was written for {path}.")
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "output appeared while writing; not replaced", path) from None
            except OSError:  # no hard links here (some network and FAT file systems)
                if os.path.lexists(path):
                    raise FileExistsError(errno.EEXIST, "output appeared while writing; not replaced", path) from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def remove_stale_temps(output_dir: str | os.PathLike) -> list[str]:
    """Delete temporary files that an interrupted earlier run left in ``output_dir`` (only :data:`TEMP_PREFIX` ones).

    Returns:
        the removed paths.
    """
    folder = os.fspath(output_dir)
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(TEMP_PREFIX) and os.path.isfile(path) and not os.path.islink(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def preserve_existing(path: str, link: bool = False) -> str | None:
    """Keep a file that a new run would replace: rename ``model.pt`` to ``model.<timestamp>.pt``.

    The checkpoint savers (:class:`pyconv_monai.handlers.AtomicDiskSaver` with ``keep_existing``) and
    :class:`pyconv_monai.handlers.MetricsHistorySaver` call it just before a fresh (not resumed) training run writes
    its first file, so that earlier weights (for example
    the shipped model or one the user trained before) are never silently overwritten, and merely building a
    workflow moves nothing.

    Args:
        path: the file.
        link: keep ``path`` in place too (a hard link, or a copy where links are not supported), so that the
            caller can replace it in one atomic step and a file of that name always exists.

    Returns:
        the new path of the preserved file, or ``None`` when there was nothing to preserve.
    """
    if not os.path.isfile(path):
        return None
    stem, ext = os.path.splitext(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.path.getmtime(path)))
    target, n = f"{stem}.{stamp}{ext}", 1
    while os.path.exists(target):
        target, n = f"{stem}.{stamp}-{n}{ext}", n + 1
    if not link:
        os.replace(path, target)
    else:
        try:
            os.link(path, target)
        except OSError:  # no hard links here (some network and FAT file systems)
            shutil.copy2(path, target)
    logger.warning(f"kept the existing {path} as {target}; this run writes a new {os.path.basename(path)}")
    return target
