# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""MONAI's ``CacheDataset``, except that an error while caching stops the process cleanly.

MONAI fills the cache in a ``ThreadPool``; when one item raises (a label that is not binary, an unreadable file),
the exception leaves the pool while the other worker threads are still running transforms. Python then exits with
those threads inside torch, and the process aborts: ``terminate called without an active exception``, exit 134,
after the real message. Here the remaining items are skipped, the workers are joined, and then the first error
is raised.
"""

from __future__ import annotations

import threading
from multiprocessing.pool import ThreadPool
from typing import Any

from monai.data import CacheDataset as _MonaiCacheDataset
from monai.utils import optional_import

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["SafeCacheDataset"]


class SafeCacheDataset(_MonaiCacheDataset):
    """``monai.data.CacheDataset`` whose cache filling joins its worker threads before raising an item's error.

    Arguments and behaviour are MONAI's; only an error while caching differs: the items not started yet are
    skipped, the running ones finish, and the first error is raised (no abort at exit).
    """

    def _fill_cache(self, indices: list[int] | None = None) -> list:
        if self.cache_num <= 0:
            return []
        if indices is None:
            indices = list(range(self.cache_num))
        failed = threading.Event()
        errors: list[BaseException] = []

        def load(idx: int) -> Any:
            if failed.is_set():
                return None
            try:
                return self._load_cache_item(idx)
            except BaseException as e:  # noqa: B036 (kept and raised in the main thread)
                errors.append(e)
                failed.set()
                return None

        pool = ThreadPool(self.num_workers)
        try:
            results = pool.imap(load, indices)
            if self.progress and has_tqdm:
                results = tqdm(results, total=len(indices), desc="Loading dataset")
            out = list(results)
        finally:
            pool.close()
            pool.join()
        if errors:
            raise errors[0]
        return out
