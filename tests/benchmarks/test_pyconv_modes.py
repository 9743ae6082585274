"""Smoke test of benchmarks/pyconv_modes.py on the CPU (tiny sizes; no timing assertions)."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def test_pyconv_modes_prints_one_row_per_mode(capsys):
    spec = importlib.util.spec_from_file_location("pyconv_modes", REPO / "benchmarks" / "pyconv_modes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--size", "16", "--batch-size", "2", "--rounds", "1", "--modes", "reference,dense",
                        "--device", "cpu"])  # fmt: skip
    assert [r["mode"] for r in rows] == ["reference", "dense"]
    assert all(r["train_s"] > 0 and r["infer_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| reference | " in out and "| dense | " in out and "interleaved" in out
