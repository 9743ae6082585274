"""``benchmarks/runtime_profile.py``: per-layer profiles of an exported network on OpenVINO and ONNX Runtime."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from pyconv_monai.networks import PyConvUNet
from pyconv_monai.runtime import available_runtimes, export_onnx

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("runtime_profile", REPO / "benchmarks" / "runtime_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("runtime", [r for r in ("openvino", "onnxruntime") if r in available_runtimes()])
def test_profile_names_the_convolutions_with_their_shapes(bench, runtime):
    torch.manual_seed(0)
    net = PyConvUNet(features=(16, 32, 64), stage_levels=(3, 4, 4)).eval()
    model = export_onnx(net, None, "reference", (32, 32))
    x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
    if runtime == "openvino":
        rows = bench.profile_openvino(model, x, "fp32", 1, 2)
    else:
        rows = bench.profile_onnxruntime(model, x, 1, 2)
    assert rows and all(r["ms"] >= 0 for r in rows)
    types, layers, total = bench.report_rows(rows, bench._shapes(model), 5)
    assert total > 0 and len(layers) == 5
    assert any("Conv" in t[0] for t in types), types
    shares = sum(float(t[2].rstrip(" %")) for t in types)
    assert shares == pytest.approx(100, abs=1)
    if runtime == "onnxruntime":  # ONNX Runtime keeps the ONNX node names: every layer gets its output shape
        assert all(layer[3] for layer in layers), layers
    units = [n for n, m in net.named_modules() if type(m).__name__ == "PyConvNormAct"]
    per_unit = bench.unit_times(rows, units)  # --units: every unit's convolutions found by its module name
    assert set(units) <= set(per_unit) and all(per_unit[u] > 0 for u in units), per_unit
    assert sum(per_unit.values()) == pytest.approx(total)
