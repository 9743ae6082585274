# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""A module imported on first use: start-up pays only for what a command uses (``pyconv-monai --help`` imports no
MONAI, torch, OpenVINO or highdicom).

``name = lazy_module("package.module")`` is written at module level, where the import would be:
``tests/test_layering.py`` reads these calls as imports (ranks checked, never inside a function), so a lazy import
cannot hide a dependency the way an import inside a function would.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule(types.ModuleType):
    """Stands for a module; the first attribute read imports it and answers from it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_target"]
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "imported" if self.__dict__["_lazy_target"] is not None else "not imported yet"
        return f"<lazy module {self.__name__!r} ({state})>"


def lazy_module(name: str) -> types.ModuleType:
    """A stand-in for module ``name`` that imports it on first attribute access (an ``ImportError`` comes then).

    Args:
        name: the absolute module name, e.g. ``"monai.bundle"``.

    Returns:
        the stand-in; ``lazy_module("x").attr`` is ``importlib.import_module("x").attr``.
    """
    return _LazyModule(name)
