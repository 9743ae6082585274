# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The data set of an inference run: one item per case, and a case that cannot be read fails alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.data import Dataset
from monai.transforms import apply_transform

__all__ = ["CaseDataset", "error_message", "unwrap_transform_error"]


def unwrap_transform_error(e: BaseException) -> BaseException:
    """The error of the failing step, without MONAI's "applying transform" ``RuntimeError`` wrappers around it."""
    cause = e
    while type(cause) is RuntimeError and cause.__cause__ is not None and "applying transform" in str(cause):
        cause = cause.__cause__
    return cause


def error_message(e: BaseException) -> str:
    """One line for a user: the message of the failing step (with the exception's type where it is not one of the
    errors this project raises with a full sentence)."""
    cause = unwrap_transform_error(e)
    known = (ValueError, OSError)  # OSError: files missing or existing, permissions, a full disk
    message = str(cause) if isinstance(cause, known) else f"{type(cause).__name__}: {cause}"
    return " ".join(message.split())


class CaseDataset(Dataset):
    """MONAI ``Dataset`` over the cases of :func:`pyconv_monai.data.find_cases` whose item, when ``transform``
    fails on a case (an unreadable series, a wrong modality, ...), is the case with the reason under ``"error"``.

    So one bad case is reported (the bundles' ``volumes.csv``) and the others are still segmented. Every item keeps
    the case's input path under ``"input"``.

    Args:
        data: the cases (dicts with ``"image"``).
        transform: the bundle's ``preprocessing``.
    """

    def __init__(self, data: Sequence[dict], transform: Callable | None = None) -> None:
        super().__init__(data=data, transform=transform)

    def _transform(self, index: int) -> Any:
        case = dict(self.data[index])
        case.setdefault("input", case.get("image"))
        if self.transform is None:
            return case
        try:
            return apply_transform(self.transform, dict(case))
        except Exception as e:  # one case's failure is its row of the results, not the end of the run
            return {**case, "error": error_message(e)}
