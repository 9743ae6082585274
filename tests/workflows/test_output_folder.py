"""The output folder of an inference run (issue 18): writable and free before the network runs, one run at a time,
an interrupted run completed rather than refused, and NaN/Inf weights or outputs never written as a mask."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from pyconv_monai.workflows import InferenceError
from pyconv_monai.workflows.inference import LOCK_NAME

from tests.workflows.test_inference import read_csv, run, shift_weights


@pytest.fixture
def series(shared_data):
    return shared_data / "ct_dicom_dcmqi_3slice" / "dicom"


def test_a_folder_in_use_by_a_live_run_is_refused(series, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": other.pid, "outputs": []}))
        with pytest.raises(FileExistsError, match=f"in use by another run \\(process {other.pid}"):
            run("lung_ct_segmentation", series, out, shift_weights(tmp_path / "w.pt"))
    finally:
        other.kill()
        other.wait()
    assert sorted(os.listdir(out)) == [LOCK_NAME]  # nothing written, the other run's lock kept
    rows = run("lung_ct_segmentation", series, out, shift_weights(tmp_path / "w.pt"))  # its process is gone now
    assert [r["status"] for r in rows] == ["ok"] and not (out / LOCK_NAME).exists()


def test_a_run_killed_between_mask_and_seg_is_completed_by_the_next(series, tmp_path):
    """What a killed run leaves: its lock (a dead process) listing the outputs it was writing, the mask written, no
    SEG, no volumes.csv. The next run, without --overwrite, replaces that run's own files and completes the case;
    a file that was there before is kept."""
    out = tmp_path / "out"
    weights = shift_weights(tmp_path / "w.pt")
    run("lung_ct_segmentation", series, out, weights)
    mask_before = np.asarray(nib.load(out / "99000_S2_seg.nii.gz").dataobj)
    (out / "99000_S2_seg.dcm").unlink()
    (out / "volumes.csv").unlink()
    (out / "notes.txt").write_text("the user's own file")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = {"pid": int(dead.stdout), "outputs": ["99000_S2_seg.nii.gz", "99000_S2_seg.dcm"]}
    (out / LOCK_NAME).write_text(json.dumps(lock))
    rows = run("lung_ct_segmentation", series, out, weights)
    assert [(r["case"], r["status"]) for r in rows] == [("99000_S2", "ok")]
    assert sorted(os.listdir(out)) == ["99000_S2_seg.dcm", "99000_S2_seg.nii.gz", "notes.txt", "volumes.csv"]
    np.testing.assert_array_equal(np.asarray(nib.load(out / "99000_S2_seg.nii.gz").dataobj), mask_before)
    assert (out / "notes.txt").read_text() == "the user's own file"

    (out / "volumes.csv").unlink()  # no lock now: the finished outputs are the user's and are not replaced
    with pytest.raises(InferenceError, match="1 of 1 case"):
        run("lung_ct_segmentation", series, out, weights)
    assert "exists; pass --overwrite true" in read_csv(out / "volumes.csv")["99000_S2"]["message"]


def test_a_failed_run_leaves_a_lock_the_next_run_completes(series, tmp_path, monkeypatch):
    """An exception inside the run (here: writing the DICOM SEG is interrupted) marks the lock as interrupted."""
    from pyconv_monai.writers import save

    out = tmp_path / "out"
    weights = shift_weights(tmp_path / "w.pt")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(save, "write_dicom_seg", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run("lung_ct_segmentation", series, out, weights)
    lock = json.loads((out / LOCK_NAME).read_text())
    assert lock["pid"] == -1 and "99000_S2_seg.nii.gz" in lock["outputs"]
    monkeypatch.undo()
    rows = run("lung_ct_segmentation", series, out, weights)
    assert [r["status"] for r in rows] == ["ok"] and (out / "99000_S2_seg.dcm").is_file()


@pytest.mark.parametrize("where", ["file", "parent_file"])
def test_an_output_folder_that_cannot_be_a_folder_fails_before_the_network_runs(series, tmp_path, where):
    (tmp_path / "f").write_text("a file")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "out"
    with pytest.raises(OSError, match="cannot use the output folder") as err:
        run("lung_ct_segmentation", series, out, shift_weights(tmp_path / "w.pt"))
    assert str(out) in str(err.value)
    assert (tmp_path / "f").read_text() == "a file"


def test_an_unwritable_output_folder_fails_before_the_network_runs(series, tmp_path, monkeypatch):
    """(As root a read-only folder is still writable, so the refusal of the lock file is simulated.)"""
    from pyconv_monai.workflows import inference

    def read_only(path, overwrite=False):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(inference, "atomic_write", read_only)
    calls = []
    monkeypatch.setattr(inference.SegmentationEvaluator, "_segment", lambda *a: calls.append(a))
    with pytest.raises(PermissionError, match="cannot write to the output folder: Permission denied"):
        run("lung_ct_segmentation", series, tmp_path / "out", shift_weights(tmp_path / "w.pt"))
    assert calls == []  # the network never ran


def test_nan_weights_stop_the_run_and_inf_outputs_fail_the_case(series, tmp_path):
    bad = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        bad.weight.fill_(float("nan"))
    torch.save(bad.state_dict(), tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="nan.pt: the weights hold NaN or Inf values \\(weight\\)"):
        run("lung_ct_segmentation", series, tmp_path / "out", tmp_path / "nan.pt")
    assert not (tmp_path / "out").exists()

    huge = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        huge.weight.zero_()
        huge.weight[0, 0, 1, 1] = huge.weight[0, 0, 0, 1] = 3e38  # finite weights whose output overflows to Inf
        huge.bias.zero_()
    torch.save(huge.state_dict(), tmp_path / "huge.pt")
    with pytest.raises(InferenceError, match="1 of 1 case"):
        run("lung_ct_segmentation", series, tmp_path / "out2", tmp_path / "huge.pt", runtime="torch")
    row = read_csv(tmp_path / "out2" / "volumes.csv")["99000_S2"]
    assert row["status"] == "error" and "infinite values" in row["message"] and "the case fails" in row["message"]
    assert sorted(os.listdir(tmp_path / "out2")) == ["volumes.csv"]  # no mask written


def test_cli_exit_status_for_a_folder_in_use(series, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": other.pid, "outputs": []}))
        cmd = [
            sys.executable,
            "-m",
            "pyconv_monai.cli",
            "segment",
            str(series),
            str(out),
            "--bundle",
            "lung_ct_segmentation",
            "--no-progress",
        ]  # the shipped weights load; the folder is refused next
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(cmd + ["--device", "cpu"], capture_output=True, text=True, env=env)
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"in use by another run (process {other.pid}" in done.stderr


def test_a_volume_without_geometry_is_refused_unless_a_spacing_is_assumed(shared_data, tmp_path):
    """End to end (issue 18): the real CT NIfTI with qform/sform codes 0 and zero pixdim fails its case, naming the
    file; with ``assume_spacing`` (``--assume-spacing`` of pyconv-monai segment) it is segmented and volumes.csv says
    what was assumed, with the true volume of its 3 mm voxels."""
    from tests.transforms.test_headers import PIXDIM_OFFSET, _patch, _save

    ct = nib.load(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz")
    header = ct.header.copy()
    header.set_sform(None, code=0)
    header.set_qform(None, code=0)
    data = tmp_path / "in"
    data.mkdir()
    _patch(_save(ct, data / "nogeom.nii", header), PIXDIM_OFFSET + 4, "3f", 0.0, 0.0, 0.0)
    weights = shift_weights(tmp_path / "w.pt")
    with pytest.raises(InferenceError, match="1 of 1 case"):
        run("lung_ct_segmentation", data, tmp_path / "out", weights)
    row = read_csv(tmp_path / "out" / "volumes.csv")["nogeom"]
    assert row["status"] == "error" and "nogeom.nii: no usable voxel geometry" in row["message"]
    assert "assume_spacing" in row["message"] and os.listdir(tmp_path / "out") == ["volumes.csv"]

    rows = run("lung_ct_segmentation", data, tmp_path / "out2", weights, assume_spacing="3,3,3")
    assert rows[0]["status"] == "ok" and "voxel size assumed 3x3x3 mm" in rows[0]["message"]
    assert rows[0]["voxel_volume_mm3"] == pytest.approx(abs(np.linalg.det(ct.affine[:3, :3])))
    assert "voxel size assumed" in read_csv(tmp_path / "out2" / "volumes.csv")["nogeom"]["message"]


def test_a_dicom_series_with_an_assumed_spacing_gets_a_mask_and_no_seg(shared_data, tmp_path):
    """A copy of the real series without PixelSpacing, segmented with ``assume_spacing``: the mask is written, the
    DICOM SEG is not (its headers carry no geometry to place frames by), and volumes.csv says both."""
    import pydicom

    data = tmp_path / "in" / "ct"
    data.mkdir(parents=True)
    for src in sorted((shared_data / "ct_dicom_dcmqi_3slice" / "dicom").iterdir()):
        ds = pydicom.dcmread(src)
        del ds.PixelSpacing
        ds.save_as(data / src.name)
    rows = run("lung_ct_segmentation", tmp_path / "in", tmp_path / "out", shift_weights(tmp_path / "w.pt"),
               assume_spacing="0.8,0.8,1")  # fmt: skip
    (row,) = rows
    assert row["status"] == "ok" and "voxel size assumed 0.8x0.8x1 mm" in row["message"]
    assert "no DICOM SEG written: the voxel size was assumed" in row["message"]
    assert sorted(os.listdir(tmp_path / "out")) == [f"{row['case']}_seg.nii.gz", "volumes.csv"]


def test_a_full_disk_fails_the_case_in_one_line_and_the_run_names_the_table(series, tmp_path, monkeypatch, capsys):
    """A full disk (ENOSPC, simulated: no test can fill the real one) while the DICOM SEG is written fails the case
    with one line naming the file (no traceback in the message); while volumes.csv is written, the command exits
    with status 2 naming the table."""
    import errno

    from pyconv_monai import cli
    from pyconv_monai.workflows import inference
    from pyconv_monai.writers import save

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "99000_S2_seg.dcm"))

    monkeypatch.setattr(save, "write_dicom_seg", full)
    with pytest.raises(InferenceError, match="1 of 1 case"):
        run("lung_ct_segmentation", series, tmp_path / "out", shift_weights(tmp_path / "w.pt"))
    message = read_csv(tmp_path / "out" / "volumes.csv")["99000_S2"]["message"]
    assert message == (
        "the mask 99000_S2_seg.nii.gz was written, the DICOM SEG was not: [Errno 28] No space left on device: "
        f"'{tmp_path / 'out' / '99000_S2_seg.dcm'}'"
    )

    def full_table(rows, path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(inference, "write_csv", full_table)
    monkeypatch.setattr(cli, "segment", lambda *a, **k: run("lung_ct_segmentation", series, tmp_path / "out2",
                                                            shift_weights(tmp_path / "w.pt")))  # fmt: skip
    assert cli.main(["segment", str(series), str(tmp_path / "out2"), "--bundle", "lung_ct_segmentation"]) == 2
    err = capsys.readouterr().err
    assert "pyconv-monai: error: [Errno 28] No space left on device" in err and "volumes.csv" in err
