"""MONAI Label 0.8.5's own ``BundleInferTask`` runs each bundle folder unchanged (issue 20): it names value 1 as the
organ (from ``metadata.json``'s ``outputs.pred.channel_def``) and its mask is ``pyconv-monai segment``'s, voxel for
voxel, on real data. MONAI Label runs in its own venv (see ``tests/clients/conftest.py``)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import tifffile
from pyconv_monai.cli import segment

from tests.clients.conftest import run_client
from tests.conftest import REPO

CASES = [
    ("liver_ct_segmentation", "ct_dicom_dcmqi_3slice/dicom", "liver"),
    ("lung_ct_segmentation", "ct_nifti_totalseg/example_ct_sm.nii.gz", "lung"),
    ("neuron_em_segmentation", "isbi2012_em/train-volume.tif", "cell interior"),
]


@pytest.mark.slow
@pytest.mark.parametrize("bundle, source, organ", CASES)
def test_bundle_infer_task_gives_segments_mask(label_python, shared_data, tmp_path, bundle, source, organ):
    path = shared_data / source
    if path.suffix == ".tif":  # the first 4 pages of the real stack: the same recipe, a quarter of the time
        path = tmp_path / "em.tif"
        tifffile.imwrite(path, tifffile.imread(shared_data / source)[:4], photometric="minisblack")  # 4 pages, not RGBA
    bundle_dir = tmp_path / bundle
    shutil.copytree(REPO / "bundles" / bundle, bundle_dir, ignore=shutil.ignore_patterns("eval"))
    before = sorted(p.relative_to(bundle_dir) for p in bundle_dir.rglob("*"))

    result = tmp_path / "label.json"
    script = str(REPO / "tests" / "clients" / "label_infer.py")
    run_client(label_python, [script, str(bundle_dir), str(path), str(result)], tmp_path)
    answer = json.loads(result.read_text())
    assert answer["labels"] == {organ: 1}  # value 1 is the organ; "background" (0) is not a label
    by_label = np.load(answer["label"])
    assert sorted(p.relative_to(bundle_dir) for p in bundle_dir.rglob("*")) == before  # nothing written there

    values = {"progress": False, "device": "cpu", "dicom_seg": False, "runtime_options": {"precision": "fp32"}}
    rows = segment(path, tmp_path / "out", bundle, values, configure_logging=False)
    written = tmp_path / "out" / rows[0]["mask"]
    if written.suffix == ".tif":
        expected = np.moveaxis(tifffile.imread(written), 0, -1) > 0
    else:
        expected = np.asarray(nib.load(written).dataobj) > 0
    assert expected.any()
    assert set(np.unique(by_label)) <= {0.0, 1.0}
    np.testing.assert_array_equal(by_label > 0, expected)
