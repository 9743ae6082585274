# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""TIFF reader for MONAI's ``LoadImage``: single images and multi-page stacks (EM), any bit depth, via tifffile.

MONAI has no tifffile reader; ``PILReader`` reads only the first page of a stack and widens some 16-bit types.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tifffile
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

__all__ = ["TiffReader", "TIFF_SUFFIXES", "tiff_num_pages"]

TIFF_SUFFIXES = (".tif", ".tiff")


def _num_images(series: Any) -> int:
    return int(np.prod([n for n, a in zip(series.shape, series.axes) if a not in "YXS"], dtype=int))


class _MixedPages(ValueError):
    """A TIFF whose pages differ in size (raised as is, not re-wrapped)."""


def _single_series(tif: Any, path: str) -> Any:
    """The one image series of a TIFF file; raise where its pages do not form one stack (sizes differ)."""
    if len(tif.series) > 1:
        shapes = ", ".join(f"{'x'.join(str(n) for n in s.shape)} ({s.axes})" for s in tif.series[:6])
        more = ", ..." if len(tif.series) > 6 else ""
        raise _MixedPages(
            f"{path}: its pages do not form one stack: {len(tif.series)} groups of pages of different sizes or "
            f"types ({shapes}{more}); reading only the first would give a partial volume. Save the pages of one size "
            "as a file of their own."
        )
    return tif.series[0]


def tiff_num_pages(path: str | os.PathLike) -> int:
    """Number of 2D images in a TIFF file (pages of a stack; 1 for a single image).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable TIFF, or its pages differ in size.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TIFF file not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            return _num_images(_single_series(tif, os.fspath(path)))
    except _MixedPages:
        raise
    except Exception as e:
        raise ValueError(f"{path}: not a readable TIFF ({type(e).__name__}: {e}).") from e


class TiffReader(ImageReader):
    """Read TIFF images with tifffile, rows first (no index reversal, unlike MONAI's ``PILReader`` default).

    A single image gives an array ``(H, W)`` (``(H, W, S)`` for RGB samples, with ``original_channel_dim=-1``); a
    multi-page stack gives ``(H, W, N)``, pages last like the slices of a CT volume, or ``(H, W)`` for one ``page``.
    The affine is the identity (TIFF carries no patient geometry).

    Args:
        page: read only this page of a stack (0-based).
    """

    def __init__(self, page: int | None = None) -> None:
        super().__init__()
        self.page = page

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and os.fspath(names[0]).lower().endswith(TIFF_SUFFIXES)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> tuple[np.ndarray, str, str]:
        """Read the pixels.

        Args:
            data: one TIFF path.
            kwargs: ``page`` overrides the reader's.

        Returns:
            ``(array, axes, path)`` as tifffile gives them.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not a readable TIFF (truncated, corrupt), its pages differ in size (a stack of
                512, 256 and 512 pixel pages is refused, not read as its first page), or ``page`` is out of range.
        """
        path = os.fspath(data if isinstance(data, (str, os.PathLike)) else data[0])
        page = kwargs.get("page", self.page)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TIFF file not found: {path}")
        try:
            with tifffile.TiffFile(path) as tif:
                series = _single_series(tif, path)
                axes = series.axes
                n = _num_images(series)
                if page is None:
                    array = series.asarray()
                else:
                    if not 0 <= page < n:
                        raise IndexError(f"page {page} out of range: the file has {n} page(s)")
                    array = tif.asarray(key=page) if n > 1 else series.asarray()
                    axes = "".join(a for a in axes if a in "YXS")
        except IndexError as e:
            raise ValueError(f"{path}: {e}.") from e
        except _MixedPages:
            raise
        except Exception as e:
            raise ValueError(f"{path}: cannot read the TIFF ({type(e).__name__}: {e}); is the file complete?") from e
        return array, axes, path

    def get_data(self, img: tuple[np.ndarray, str, str]) -> tuple[np.ndarray, dict]:
        """The array (rows first, stack pages last) and its meta dict."""
        array, axes, path = img
        samples = "S" in axes
        if samples:
            array = np.moveaxis(array, axes.index("S"), -1)
            axes = axes.replace("S", "") + "S"
        spatial = [a for a in axes if a != "S"]
        if len(spatial) > 2:  # stack: flatten leading axes into pages, put pages after Y, X
            lead = len(spatial) - 2
            shape = array.shape
            array = array.reshape((-1, *shape[lead:]))
            array = np.moveaxis(array, 0, 2)
        n_spatial = 3 if len(spatial) > 2 else 2
        meta = {
            MetaKeys.AFFINE: np.eye(4),
            MetaKeys.ORIGINAL_AFFINE: np.eye(4),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[:n_spatial]),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if samples else float("nan"),
            "filename_or_obj": path,
        }
        return np.ascontiguousarray(array), meta
