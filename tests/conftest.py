"""Shared fixtures: where the real data lives, and small real EM samples."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EMBEDDED_DATA = REPO / "data"


def shared_data_dir() -> Path:
    """The staged public data sets (``../shared/data`` beside the checkout, or ``$PYCONV_SHARED_DATA``)."""
    return Path(os.environ.get("PYCONV_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data sets; fails (rather than skips) when ``PYCONV_REQUIRE_DATA=1`` and it is missing."""
    root = shared_data_dir()
    if not root.is_dir():
        if os.environ.get("PYCONV_REQUIRE_DATA") == "1":
            pytest.fail(f"real data required but not found at {root}")
        pytest.skip(f"real data not found at {root}; set PYCONV_SHARED_DATA")
    return root


@pytest.fixture(scope="session")
def em_stack() -> tuple[np.ndarray, np.ndarray]:
    """The embedded ISBI 2012 EM stack: images (25, 512, 512) uint8 and labels in {0, 255}."""
    import tifffile

    folder = EMBEDDED_DATA / "isbi2012_em"
    return tifffile.imread(folder / "train-volume.tif"), tifffile.imread(folder / "train-labels.tif")


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory):
    """The runtimes' model cache (default ~/.cache/pyconv-monai) in a temporary folder: tests never write home."""
    saved = os.environ.get("PYCONV_MONAI_ONNX_CACHE")
    os.environ["PYCONV_MONAI_ONNX_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if saved is None:
        os.environ.pop("PYCONV_MONAI_ONNX_CACHE", None)
    else:
        os.environ["PYCONV_MONAI_ONNX_CACHE"] = saved


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
