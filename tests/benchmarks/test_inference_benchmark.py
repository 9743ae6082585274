"""``benchmarks/inference.py`` runs end to end on a real DICOM series and prints its table."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_inference_benchmark_table(shared_data, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("inference_benchmark", REPO / "benchmarks" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "table.md"
    series = shared_data / "ct_dicom_dcmqi_3slice" / "dicom"
    args = ["--series", str(series), "--slices", "1", "--batch-size", "1", "--device", "cpu", "--out", str(out)]
    assert module.main(args + ["--bundle", "liver"]) == 0
    table = out.read_text()
    assert table in capsys.readouterr().out
    steps = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert steps[:3] == ["step", "read", "preprocess"] and "write NIfTI" in steps and "write DICOM SEG" in steps
    assert steps.count("inference") in (1, 2) and "orientation ALS" in table and "(3 slices)" in table
    for line in table.splitlines():
        if line.startswith("| read") or line.startswith("| inference"):
            assert float(line.split("|")[3]) > 0
