"""The scripts of the one-command GPU run (benchmarks/gpu_run.sh) on the CPU: tables, overrides, failure paths.

No timing assertions: the CPU here is shared; the GPU run is what measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def test_bundle_epochs_overrides_and_table(tmp_path):
    be = _load("bundle_epochs")
    args = argparse.Namespace(dataset_dir=str(tmp_path), epochs=3, batch_size=None, subset=4, patch=64)
    with_key = be._overrides({"pyconv_mode": "reference"}, "pyconvunet:ungrouped", args, tmp_path)
    assert with_key["pyconv_mode"] == "ungrouped" and "network" not in with_key
    assert with_key["network_name"] == "pyconvunet" and with_key["epochs"] == 3
    assert with_key["dataset_dir"] == str(tmp_path.resolve()) and with_key["train_patch_size"] == [64, 64]
    without_key = be._overrides({}, "pyconvunet:dense", args, tmp_path)
    assert "optimize_pyconv(@network_def, 'dense')" in without_key["network"]
    assert "pyconv_mode" not in be._overrides({"pyconv_mode": "x"}, "unet", args, tmp_path)
    rows = [
        {
            "model": "unet",
            "pyconv_modes": {},
            "train_slices": 302,
            "val_slices": 76,
            "batch_size": 5,
            "setup_s": 20.0,
            "epoch_s": [9.0, 4.0, 6.0],
            "first_s": 9.0,
            "median_later_s": 5.0,
            "extrapolated_50_s": 254.0,
            "best_val_dice": 0.5,
        },
        {
            "model": "pyconvunet:ungrouped",
            "pyconv_modes": {"ungrouped": 18},
            "train_slices": 302,
            "val_slices": 76,
            "batch_size": 5,
            "setup_s": 20.0,
            "epoch_s": [12.0, 2.5, 2.5],
            "first_s": 12.0,
            "median_later_s": 2.5,
            "extrapolated_50_s": 134.0,
            "best_val_dice": None,
        },
        {"model": "pyconvunet:dense", "error": "RuntimeError: boom"},
    ]
    table = be.format_table(rows, "header")
    lines = table.splitlines()
    assert lines[0] == "header" and len(lines) == 2 + 2 + 3
    assert "| 4.00, 6.00 (5.00) | 1.00 | 254 | 0.5000 |" in lines[4]
    assert "ungrouped×18" in lines[5] and "| 0.50 | 134 |" in lines[5]
    assert "RuntimeError: boom" in lines[6]


def test_profile_step_table_on_cpu(tmp_path):
    out = tmp_path / "profile.md"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "profile_step.py"),
        "--device",
        "cpu",
        "--models",
        "unet",
        "--size",
        "16",
        "--batch-size",
        "2",
        "--warmup",
        "1",
        "--steps",
        "1",
        "--top",
        "3",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    text = out.read_text()
    assert "### unet:" in text and "ms of CPU time per step" in text
    assert len([line for line in text.splitlines() if line.startswith("| `")]) == 3


@pytest.mark.skipif(sys.platform != "linux", reason="bash script")
def test_gpu_run_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_run.sh")], check=True)
