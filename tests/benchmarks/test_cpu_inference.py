"""``benchmarks/cpu_inference.py``: the study it builds from the real series, its Dice, and its table (issue 12)."""

from __future__ import annotations

import importlib.util
import re

import pydicom
import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("cpu_inference", REPO / "benchmarks" / "cpu_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_is_one_series_of_distinct_positions(bench, shared_data, tmp_path):
    from pyconv_monai.data import find_cases

    series = shared_data / "ct_dicom_dcmqi_3slice" / "dicom"
    n = bench.build_study(series, 4, tmp_path)
    assert n == 4 * len(list(series.iterdir()))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in tmp_path.iterdir()]
    z = sorted(float(h.ImagePositionPatient[2]) for h in headers)
    assert len(set(z)) == n, "every copy lies at its own positions"
    assert len({h.SOPInstanceUID for h in headers}) == n
    (case,) = find_cases(tmp_path)
    assert case["kind"] == "dicom_series" and len(case["files"]) == n


@pytest.mark.slow
def test_table_on_a_real_series(bench, shared_data, tmp_path, capsys):
    out = tmp_path / "table.md"
    series = shared_data / "ct_dicom_dcmqi_3slice" / "dicom"
    args = ["--series", str(series), "--networks", "pyconvunet", "--slices", "1", "--batch-size", "1", "--repeats",
            "1", "--study-slices", "6", "--study-runtimes", "auto", "--out", str(out)]  # fmt: skip
    assert bench.main(args) == 0
    table = out.read_text()
    assert table in capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| pyconvunet |")]
    assert rows[0].split("|")[2].strip() == "torch eager (reference)" and len(rows) >= 2
    for row in rows:
        assert float(row.split("|")[3]) > 0 and float(row.split("|")[8].strip(" %")) >= 99.9
    assert re.search(r"\| auto \| 6 \| [\d.]+ \| [\d.]+ \| \d+ \| ok \|", table)


def test_dice_table_allows_a_lossy_precision_only_within_0002_either_way(bench):
    import argparse

    args = argparse.Namespace(slices=1, series="s", batch_size=1, repeats=1, threads=2, study_slices=0, bundle="b")
    cases = (("ok", 0.0015, 0.001), ("worse", 0.003, 0.0), ("better", -0.003, 0.0), ("int8", 0.0, 0.0025))
    scores = [{"bundle": name, "slices": 5, "differ": 0.001,
               "dice": {"fp32": 0.9, "ort": 0.8, "bf16": 0.9 - bf16, "ov_int8": 0.9 - int8, "ort_int8": 0.9}}
              for name, bf16, int8 in cases]  # fmt: skip
    slices = [{"network": "pyconvunet", "path": "torch eager (reference)", "setup_s": 0.0, "s_per_slice": 1.0,
               "cpu_per_slice": 1.0, "diff": 0.0, "agree": 1.0}]  # fmt: skip
    table = bench.report(args, "host", slices, [], scores)
    allowed = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in table.splitlines()
               if line.startswith("| ") and line.split("|")[1].strip() in dict((c[0], c) for c in cases)}  # fmt: skip
    assert allowed == {"ok": "yes", "worse": "no", "better": "no", "int8": "no"}
    # a CPU without bfloat16 units: no bf16 column values, the rule from int8 alone
    scores = [{"bundle": "nobf16", "slices": 5, "differ": None, "dice": {"fp32": 0.9, "ort": 0.9, "ov_int8": 0.8995}}]
    (row,) = [line for line in bench.report(args, "host", slices, [], scores).splitlines() if "| nobf16 |" in line]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[4] == "" and cells[-3:] == ["0.00050", "", "yes"]
