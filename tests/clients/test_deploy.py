"""The MONAI Deploy App SDK app (``deploy/liver_seg_app``: the SDK's standard DICOM loader, series selector, series to
volume, ``MonaiBundleInferenceOperator`` and DICOM SEG writer) segments the embedded CT series with the exported
liver bundle, unchanged, and its DICOM SEG is ``pyconv-monai segment``'s, voxel for voxel (issue 20). The SDK runs
in its own venv (see ``tests/clients/conftest.py``)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
from pyconv_monai.cli import segment

from tests.clients.conftest import run_client
from tests.conftest import EMBEDDED_DATA, REPO

APP = REPO / "deploy" / "liver_seg_app"
SERIES = EMBEDDED_DATA / "ct_dicom_totalseg" / "dicom"


def _compare_module():
    spec = importlib.util.spec_from_file_location("liver_seg_app_compare", APP / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hashes(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_deploy_app_writes_segments_mask_as_dicom_seg(deploy_python, tmp_path):
    dist = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pyconv_monai.cli", "export", "liver_ct_segmentation", str(dist)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (archive,) = dist.glob("liver_ct_segmentation_v*.zip")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "bundle")
    model = tmp_path / "bundle" / "liver_ct_segmentation" / "models" / "model.ts"
    with zipfile.ZipFile(model) as z:  # what the SDK reads: the configs ckpt_export put inside the TorchScript file
        assert {"extra/inference.json", "extra/metadata.json"} <= {n.split("/", 1)[1] for n in z.namelist()}

    before = _hashes(SERIES)
    out = tmp_path / "app_out"
    run = run_client(deploy_python, [str(APP), "-i", str(SERIES), "-o", str(out), "-m", str(model)], tmp_path)
    assert _hashes(SERIES) == before  # the input is never changed (the app loads a copy with filled UIDs)
    assert "temporary copy with filled UIDs" in run.stdout + run.stderr
    (app_seg,) = out.glob("*.dcm")

    rows = segment(SERIES, tmp_path / "seg", "liver_ct_segmentation",
                   {"progress": False, "device": "cpu", "runtime_options": {"precision": "fp32"}},
                   configure_logging=False)  # fmt: skip
    ours = tmp_path / "seg" / rows[0]["mask"]
    (our_seg,) = (tmp_path / "seg").glob("*_seg.dcm")
    app_fg, our_fg, differing = _compare_module().compare(app_seg, our_seg)
    assert differing == 0
    assert app_fg == our_fg == int((np.asarray(nib.load(ours).dataobj) > 0).sum()) > 0
