"""The three MONAI bundles: training, evaluation, resuming, DDP and the Model Zoo's checks, on real data (CPU)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import EMBEDDED_DATA, REPO

BUNDLES = ["neuron_em_segmentation", "lung_ct_segmentation", "liver_ct_segmentation"]
SCHEMA = REPO / "bundles" / "schemas" / "meta_schema_20240725.json"
# a small real subset, small patches and 2 epochs keep a run to about a minute on 2 CPU cores
SMALL = [
    "--train_patch_size", "[128, 128]", "--batch_size", "4", "--progress", "false", "--log_images", "true",
    "--train_datalist", "$@split[0][:8]", "--val_datalist", "$@split[1][:3]",
]  # fmt: skip


def dataset_dir(bundle: str, shared_data: Path | None) -> Path:
    if bundle == "neuron_em_segmentation":
        return EMBEDDED_DATA / "isbi2012_em"
    return shared_data / bundle.replace("_segmentation", "_2d")


def copy_bundle(bundle: str, root: Path) -> Path:
    """A copy of the bundle under ``root/bundles``, so runs write nothing into the repository."""
    target = root / "bundles" / bundle
    shutil.copytree(REPO / "bundles" / bundle, target, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval"))
    return target


def run_bundle(args: list[str], cwd: Path, timeout: int = 1200) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout + done.stderr


def read_metrics(folder: Path) -> dict[str, float]:
    with open(folder / "metrics.csv") as f:
        return {row[0]: float(row[1]) for row in csv.reader(f, delimiter=",") if row}


def evaluate(bundle_dir: Path, cwd: Path, data: Path, ckpt: Path, out: Path) -> dict[str, float]:
    configs = f"['{bundle_dir}/configs/train.json', '{bundle_dir}/configs/evaluate.json']"
    run_bundle(
        ["run", "evaluating", "--config_file", configs, "--dataset_dir", str(data), "--ckpt_file", str(ckpt),
         "--output_dir", str(out), "--val_datalist", "$@split[1][:3]"],
        cwd=cwd,
    )  # fmt: skip
    return read_metrics(out)


@pytest.fixture
def data_root(request) -> Path | None:
    """Real data: the embedded EM stack always, the staged CT sets from ``shared_data``."""
    return (
        None
        if request.node.callspec.params["bundle"] == "neuron_em_segmentation"
        else request.getfixturevalue("shared_data")
    )


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_learns_and_writes_its_outputs(bundle, data_root, tmp_path):
    bundle_dir = copy_bundle(bundle, tmp_path)
    data = dataset_dir(bundle, data_root)
    (bundle_dir / "models").mkdir(exist_ok=True)
    torch.manual_seed(1)
    untrained = bundle_dir / "models" / "untrained.pt"
    from pyconv_monai.networks import get_network

    torch.save(get_network("pyconvunet").state_dict(), untrained)
    (bundle_dir / "models" / "model.pt").write_bytes(b"earlier weights of the user")

    # the README's command: `run training` from the repository root (here: the copy's root) with --bundle_root
    log = run_bundle(
        ["run", "training", "--config_file", f"bundles/{bundle}/configs/train.json",
         "--bundle_root", f"bundles/{bundle}", "--dataset_dir", str(data), "--epochs", "3", *SMALL],
        cwd=tmp_path,
    )  # fmt: skip
    models, eval_dir = bundle_dir / "models", bundle_dir / "eval"
    assert (models / "model.pt").is_file() and (models / "checkpoint_epoch=3.pt").is_file()
    kept = [p for p in models.glob("model.*.pt")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"earlier weights of the user"  # nothing overwritten
    assert list(eval_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert re.search(r"Epoch\[3\] Metrics -- val_mean_dice: [\d.]+ val_miou: [\d.]+", log)

    before = evaluate(bundle_dir, tmp_path, data, untrained, tmp_path / "eval_untrained")
    after = evaluate(bundle_dir, tmp_path, data, models / "model.pt", tmp_path / "eval_trained")
    assert after["val_mean_dice"] > before["val_mean_dice"], (before, after)
    with open(tmp_path / "eval_trained" / "val_mean_dice_raw.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == "filename" and len(rows) == 4  # header + one row per validation case
    assert all(row[0] for row in rows[1:]) and len({row[0] for row in rows[1:]}) == 3


@pytest.mark.slow
def test_plain_run_from_the_bundle_folder(tmp_path):
    bundle_dir = copy_bundle("neuron_em_segmentation", tmp_path)
    run_bundle(
        ["run", "--config_file", "configs/train.json", "--dataset_dir", str(EMBEDDED_DATA / "isbi2012_em"),
         "--epochs", "1", "--network_name", "unet", *SMALL],
        cwd=bundle_dir,
    )  # fmt: skip
    state = torch.load(bundle_dir / "models" / "model.pt")
    assert any(k.startswith("conv_0") for k in state), "the baseline switch (--network_name unet) was not applied"


@pytest.mark.slow
def test_killed_training_resumes_from_the_last_epoch(tmp_path):
    bundle_dir = copy_bundle("neuron_em_segmentation", tmp_path)
    args = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
        "--dataset_dir", str(EMBEDDED_DATA / "isbi2012_em"), "--epochs", "3", *SMALL, "--batch_size", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=bundle_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    killed_in_epoch_2 = False
    deadline = time.time() + 900
    try:
        for line in proc.stdout:
            if "Epoch: 2/3, Iter: 2/" in line:  # in the middle of the second epoch
                proc.send_signal(signal.SIGKILL)
                killed_in_epoch_2 = True
                break
            assert time.time() < deadline, "training too slow"
    finally:
        proc.kill()
        proc.wait()
    assert killed_in_epoch_2
    models = bundle_dir / "models"
    assert sorted(p.name for p in models.glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=1.pt"]
    torch.load(models / "model.pt")  # the best model so far is intact

    log = run_bundle(args[3:] + ["--resume", "true"], cwd=bundle_dir)
    assert "Restored all variables from" in log and "checkpoint_epoch=1.pt" in log
    assert "Epoch: 1/3" not in log  # the finished epoch is not repeated
    assert "Epoch: 2/3, Iter: 1/" in log and re.search(r"Epoch\[3\] Metrics", log)
    assert sorted(p.name for p in models.glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=3.pt"]
    assert not list(models.glob("model.*.pt")), "a resumed run must keep training into the same model.pt"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    bundle_dir = copy_bundle("neuron_em_segmentation", tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
         "--dataset_dir", str(EMBEDDED_DATA / "isbi2012_em"), "--resume", "true"],
        cwd=bundle_dir, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0 and "cannot resume: no checkpoint_epoch=N.pt" in done.stderr


@pytest.mark.slow
def test_ddp_on_cpu_with_gloo(tmp_path):
    bundle_dir = copy_bundle("neuron_em_segmentation", tmp_path)
    configs = "['configs/train.json', 'configs/multi_gpu_train.json']"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(EMBEDDED_DATA / "isbi2012_em"),
         "--epochs", "1", *SMALL],
        cwd=bundle_dir, capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    reported = re.findall(r"Epoch\[1\] Metrics -- val_mean_dice: ([\d.]+)", log)
    assert len(reported) == 1, "only rank 0 logs the validation metrics"
    models = bundle_dir / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint_epoch=1.pt").is_file()
    assert not [p for p in models.iterdir() if p.name.startswith(".")], "temporary files left behind"
    # the Dice gathered over both ranks equals a single-process evaluation of the same model on the same cases
    single = evaluate(bundle_dir, bundle_dir, EMBEDDED_DATA / "isbi2012_em", models / "model.pt", tmp_path / "ev")
    assert abs(single["val_mean_dice"] - float(reported[0])) < 1e-4, (single, reported)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_layout_and_metadata_pass_the_model_zoo_checks(bundle, tmp_path):
    root = REPO / "bundles" / bundle
    for name in ["configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
                 "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "LICENSE"]:  # fmt: skip
        assert (root / name).is_file(), f"{bundle}: {name} missing"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert meta["schema"].startswith("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/")
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema)  # present, so verify_metadata does not download it: the check runs offline
    run_bundle(["verify_metadata", "--meta_file", str(root / "configs/metadata.json"), "--filepath", str(schema)],
               cwd=tmp_path)  # fmt: skip
    run_bundle(
        ["verify_net_in_out", "network_def", "--meta_file", str(root / "configs/metadata.json"),
         "--config_file", str(root / "configs/inference.json"), "--device", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_exports_to_torchscript(bundle, tmp_path):
    root = REPO / "bundles" / bundle
    ckpt = root / "models" / "model.pt"
    if not ckpt.is_file():  # no shipped weights: export checks the network definition with fresh weights
        from pyconv_monai.networks import get_network

        ckpt = tmp_path / "model.pt"
        torch.save(get_network("pyconvunet").state_dict(), ckpt)
    run_bundle(
        ["ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--ckpt_file", str(ckpt),
         "--meta_file", str(root / "configs/metadata.json"), "--config_file", str(root / "configs/inference.json")],
        cwd=tmp_path,
    )  # fmt: skip
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    assert ts(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def inference_input(bundle: str, shared_data: Path | None, root: Path) -> Path:
    """Small real inputs: two pages of the embedded EM stack; the 3-slice real CT DICOM series."""
    if bundle == "neuron_em_segmentation":
        import tifffile

        folder = root / "em"
        folder.mkdir()
        pages = tifffile.imread(EMBEDDED_DATA / "isbi2012_em" / "train-volume.tif")[:2]
        tifffile.imwrite(folder / "stack.tif", pages, photometric="minisblack")
        return folder
    return shared_data / "ct_dicom_dcmqi_3slice" / "dicom"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_from_the_repository_root_and_the_bundle_folder(bundle, data_root, tmp_path):
    """``run inference`` from the root with ``--bundle_root`` (outputs in the bundle's eval/) and plain ``run`` from the
    bundle folder give the same masks with the bundle's own network (PyConvU-Net with fresh weights, independent of any
    shipped ones)."""
    import nibabel as nib
    import numpy as np
    import tifffile

    bundle_dir = copy_bundle(bundle, tmp_path)
    data = inference_input(bundle, data_root, tmp_path)
    (bundle_dir / "models").mkdir(exist_ok=True)
    from pyconv_monai.networks import get_network

    torch.manual_seed(0)
    torch.save(get_network("pyconvunet").state_dict(), bundle_dir / "models" / "model.pt")  # the default ckpt_file
    run_bundle(
        ["run", "inference", "--config_file", f"bundles/{bundle}/configs/inference.json", "--bundle_root",
         f"bundles/{bundle}", "--dataset_dir", str(data), "--progress", "false"],
        cwd=tmp_path,
    )  # fmt: skip
    out = tmp_path / "out"
    run_bundle(
        ["run", "--config_file", "configs/inference.json", "--dataset_dir", str(data), "--output_dir", str(out),
         "--progress", "false"],
        cwd=bundle_dir,
    )  # fmt: skip
    first, second = bundle_dir / "eval", out
    for folder in (first, second):
        with open(folder / "volumes.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["status"] for r in rows] == ["ok"], rows
    if bundle == "neuron_em_segmentation":
        a, b = tifffile.imread(first / "stack_seg.tif"), tifffile.imread(second / "stack_seg.tif")
        assert a.shape == (2, 512, 512)
    else:
        assert sorted(p.name for p in first.iterdir()) == ["99000_S2_seg.dcm", "99000_S2_seg.nii.gz", "volumes.csv"]
        a, b = nib.load(first / "99000_S2_seg.nii.gz"), nib.load(second / "99000_S2_seg.nii.gz")
        np.testing.assert_allclose(a.affine, b.affine)
        a, b = np.asarray(a.dataobj), np.asarray(b.dataobj)
        assert a.shape == (512, 512, 3)
    np.testing.assert_array_equal(a, b)
