"""``benchmarks/throughput.py`` prints its one table on the CPU, and keeps it when a cell fails (no timing checks)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from monai.data import get_track_meta

from tests.conftest import REPO

TINY = ["--device", "cpu", "--size", "32", "--batch-size", "2", "--steps", "1", "--warmup", "1", "--repeats", "2"]
TINY += ["--epochs", "1", "--epoch-samples", "2", "--tune-warmup", "0", "--tune-repeats", "1"]


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", REPO / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(text: str) -> dict[tuple[str, str], list[str]]:
    """Table rows by (model, exec): their cells."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 15 and cells[1] in ("eager", "compiled"):
            out[(cells[0], cells[1])] = cells
    return out


def test_one_table_on_cpu(throughput, tmp_path, capsys):
    out, raw = tmp_path / "perf.md", tmp_path / "perf.json"
    models = "unet,pyconvunet,pyconvunet:dense,pyconvunet:auto"
    threads = torch.get_num_threads()
    args = TINY + ["--models", models, "--threads", "1", "--out", str(out), "--json", str(raw)]
    assert throughput.main(args) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    assert "**Device: CPU " in text and "input 1×32×32, batch 2 (training), 8 (inference); fp32" in text
    assert "command: `python benchmarks/throughput.py --device cpu" in text
    table = rows(text)
    assert list(table) == [(m, "eager") for m in models.split(",")]
    for cells in table.values():
        assert all(c and "error" not in c.lower() for c in cells[:11] + cells[12:]), cells
    assert table[("unet", "eager")][5] == "1.00" and table[("unet", "eager")][8] == "1.00"
    assert "pyconvunet:auto (eager): auto for training (tuned in" in text
    assert "pyconvunet:auto (eager): auto for inference (tuned in" in text

    results = json.loads(raw.read_text())["results"]
    assert results[1]["gmac"] < results[2]["gmac"]  # the dense mode pays for its speed in multiply-adds
    epoch = results[0]["epoch"]
    assert epoch["images"] == 2 and 0 <= epoch["wait_fraction"] < 1 and 0 <= epoch["dice"] <= 1
    assert get_track_meta() and torch.get_num_threads() == threads  # global settings restored


def test_failing_cells_and_budget_keep_the_table(throughput, capsys):
    args = TINY + ["--models", "unet,unet:dense", "--exec", "eager,compiled", "--phases", "infer", "--timeout", "0.5"]
    assert throughput.main(args) == 0
    table = rows(capsys.readouterr().out)
    assert "has no PyConv" in table[("unet:dense", "eager")][7]
    assert table[("unet", "compiled")][7].startswith("timeout after 0.5 s")  # a worker past its time limit

    assert throughput.main(TINY + ["--models", "unet", "--budget", "0"]) == 0
    table = rows(capsys.readouterr().out)
    assert table[("unet", "eager")][4] == "not run: --budget spent"
