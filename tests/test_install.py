"""``pip install .`` (not editable): the wheel carries the bundles, and ``pyconv-monai segment --bundle NAME`` works
from a fresh virtual environment outside the checkout (issue 13).

The wheel is built offline (``pip wheel --no-deps --no-build-isolation``) from a copy of the build inputs, so that
the checkout gets no ``build/`` or ``*.egg-info`` from the test. The fresh environment sees this environment's
dependencies (torch, MONAI, ...) through a ``.pth`` line naming its site-packages, which adds the folder without
running the ``.pth`` files in it: the editable install's finder stays out, and ``pyconv_monai`` is the wheel's.
"""

from __future__ import annotations

import csv
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pyconv_monai.visualize.overlay import display_volume

from tests.conftest import EMBEDDED_DATA, REPO

SERIES = EMBEDDED_DATA / "ct_dicom_totalseg" / "dicom"
REFERENCE = EMBEDDED_DATA / "ct_dicom_totalseg" / "labels" / "example_seg_dicom.nii.gz"
LIVER_LABEL = 5  # TotalSegmentator v2 "total": 5 is the liver (data/README.md)
BUNDLE = "liver_ct_segmentation"


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def copy_build_inputs(target: Path) -> Path:
    """The repository's top-level files, ``pyconv_monai/`` and ``bundles/`` (no caches, no ``eval/`` outputs)."""
    target.mkdir()
    for path in REPO.iterdir():
        if path.is_file():
            shutil.copy2(path, target / path.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "eval")
    for folder in ("pyconv_monai", "bundles"):
        shutil.copytree(REPO / folder, target / folder, ignore=ignore)
    return target


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The wheel, built offline, installed into a fresh virtual environment; (wheel, venv, its site-packages)."""
    tmp = tmp_path_factory.mktemp("install")
    source = copy_build_inputs(tmp / "source")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", ".", "-w",
         str(tmp / "wheel")], cwd=source)  # fmt: skip
    (wheel,) = (tmp / "wheel").glob("pyconv_monai-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp).stdout
    purelib = Path(purelib.strip())
    (purelib / "_pyconv_monai_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # pip comes from this environment's site-packages; --ignore-installed: the editable install seen there stays
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel)], cwd=tmp)
    return wheel, venv, purelib


@pytest.mark.slow
def test_wheel_ships_the_bundles_and_nothing_of_their_runs(fresh_install):
    wheel, _, _ = fresh_install
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for bundle in ("liver_ct_segmentation", "lung_ct_segmentation", "neuron_em_segmentation"):
        root = f"pyconv_monai/bundles/{bundle}"
        for rel in ("LICENSE", "configs/inference.json", "configs/train.json", "configs/metadata.json",
                    "configs/logging.conf", "configs/evaluate.json", "configs/multi_gpu_evaluate.json",
                    "docs/README.md", "docs/data_license.txt", "models/model.pt", "models/README.md",
                    "models/model_int8.json"):  # fmt: skip
            assert f"{root}/{rel}" in names, f"{wheel.name}: {root}/{rel} missing"
    assert "pyconv_monai/bundles/schemas/meta_schema_20240725.json" in names
    shipped = {n for n in names if n.startswith("pyconv_monai/bundles/") and "/models/" in n}
    assert all(n.endswith(("/model.pt", "/README.md", "/model_int8.json")) for n in shipped), shipped  # no run files
    assert not any("/eval/" in n for n in names)


@pytest.mark.slow
def test_segment_by_bundle_name_from_a_wheel_install_outside_the_checkout(fresh_install, tmp_path):
    """~1-2 minutes on 2 CPU cores: the README's main job, run by the fresh environment's console script."""
    _, venv, purelib = fresh_install
    python = venv / "bin" / "python"
    where = run(
        [str(python), "-c", "import pyconv_monai, pyconv_monai.utils as u; print(pyconv_monai.__file__); "
         "print(u.bundles_root())"], cwd=tmp_path,
    ).stdout.split()  # fmt: skip
    package = (purelib / "pyconv_monai").resolve()
    assert Path(where[0]).resolve().parent == package, f"imported {where[0]}, not the wheel's"
    assert Path(where[1]).resolve() == package / "bundles"

    work = tmp_path / "work"
    work.mkdir()
    assert REPO.resolve() not in work.resolve().parents
    done = run([str(venv / "bin" / "pyconv-monai"), "segment", str(SERIES), "out", "--bundle", BUNDLE], cwd=work,
               timeout=1500)  # fmt: skip
    log = done.stdout + done.stderr
    weights = package / "bundles" / BUNDLE / "models" / "model.pt"
    assert f"from {weights}" in log, log[-3000:]  # the weights were loaded from the wheel's bundle

    out = work / "out"
    assert sorted(p.name for p in out.iterdir()) == ["CT_Body_3.0_seg.dcm", "CT_Body_3.0_seg.nii.gz", "volumes.csv"]
    with open(out / "volumes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["status"], r["slices"]) for r in rows] == [("CT_Body_3.0", "ok", "20")], rows
    mask_img = nib.load(out / "CT_Body_3.0_seg.nii.gz")
    mask = np.asarray(mask_img.dataobj) > 0
    assert mask.shape == (512, 512, 20)
    voxel_ml = abs(np.linalg.det(mask_img.affine[:3, :3])) / 1000
    volume = float(rows[0]["volume_ml"])
    assert volume == pytest.approx(mask.sum() * voxel_ml, rel=1e-4)
    # the liver: against TotalSegmentator's liver label of the same scan (a model output, ~699 mL), as the README's
    # main job is checked in tests/test_readme.py
    ref_img = nib.load(REFERENCE)
    ref, _ = display_volume(np.asarray(ref_img.dataobj) == LIVER_LABEL, ref_img.affine)
    ours, _ = display_volume(mask, mask_img.affine)
    assert 0.75 * ref.sum() * voxel_ml < volume < 1.25 * ref.sum() * voxel_ml
    assert 2 * (ours & ref).sum() / (ours.sum() + ref.sum()) > 0.85
