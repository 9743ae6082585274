"""Bad training data and bad overrides fail before training with one line naming the problem (issue 18): labels
{0, 128, 255} or {0, 1, 2} and all-empty labels (copies of the real EM stack), ``--epochs abc``, ``--epochs 1.5``,
``--batch_size 0``, ``--network_name nosuch``, ``--epochz 1``; and a caching error never aborts the process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile
from monai.bundle import ConfigParser
from monai.transforms import Compose
from pyconv_monai.data import SafeCacheDataset, load_datalist
from pyconv_monai.workflows import (
    TrainingSetupError,
    check_overrides,
    check_training_labels,
    load_transforms,
    override_problems,
)

from tests.conftest import EMBEDDED_DATA, REPO

TRAIN_JSON = REPO / "bundles" / "neuron_em_segmentation" / "configs" / "train.json"


def _em_copy(folder, labels=None):
    """The real EM stack with ``labels(real_labels, images)`` as its labels, in the isbi2012_em layout."""
    images = tifffile.imread(EMBEDDED_DATA / "isbi2012_em" / "train-volume.tif")
    real = tifffile.imread(EMBEDDED_DATA / "isbi2012_em" / "train-labels.tif")
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "train-volume.tif", images, photometric="minisblack")
    out = real if labels is None else labels(real, images).astype(np.uint8)
    tifffile.imwrite(folder / "train-labels.tif", out, photometric="minisblack")
    return folder


def _grey(real, images):
    out = real.copy()
    out[:, :64, :64][out[:, :64, :64] == 255] = 128  # {0, 128, 255}
    return out


@pytest.fixture(scope="module")
def config():
    return ConfigParser.load_config_files(str(TRAIN_JSON))


def test_override_problems_name_the_override(config):
    problems = override_problems(
        {"epochs": "abc", "batch_size": 0, "network_name": "nosuch", "epochz": 1, "learning_rate": -1.0}, config
    )
    assert problems[0] == "--epochs 'abc': expected an integer (the config's default is 50)"
    assert problems[1] == "--batch_size 0: must be at least 1"
    assert problems[2].startswith("--network_name 'nosuch': no such network; choose one of pyconvunet, unet")
    assert problems[3] == "--epochz: not an id of the config files (did you mean --epochs?)"
    assert problems[4] == "--learning_rate -1.0: must be more than 0"
    assert override_problems({"epochs": 1.5}, config) == [
        "--epochs 1.5: expected a whole number (the config's default is 50), not a fraction"
    ]
    good = {
        "epochs": 2,
        "batch_size": 4,
        "progress": "false",
        "train_datalist": "$@split[0][:8]",
        "network_def#dropout": 0.1,
        "train#dataset#cache_rate": 0.5,
        "network_name": "unet",
        "config_file": "x",
    }
    assert override_problems(good, config) == []


def test_check_overrides_reads_the_command_line(tmp_path):
    argv = ["run", "training", "--config_file", str(TRAIN_JSON), "--epochz", "1", "--dataset_dir=/x"]
    with pytest.raises(TrainingSetupError, match=r"^--epochz: not an id .*did you mean --epochs\?\)\. Nothing was"):
        check_overrides(argv)
    assert check_overrides(["run", "training", "--config_file", f"['{TRAIN_JSON}']", "--epochs", "3"])
    assert check_overrides(["-x", "-q"])  # no config files on the command line: nothing to compare


@pytest.mark.parametrize(
    "labels, message",
    [
        (_grey, r"1 label file\(s\) are not binary masks, e.g. .*train-labels.tif \(values \{0, 128, 255\}\)"),
        (lambda real, images: real // 255 + (images > 200), r"train-labels.tif \(values \{0, 1, 2\}\)"),
        (lambda real, images: np.zeros_like(real), r"every training label is empty \(20 item\(s\), no foreground"),
    ],
)
def test_bad_training_labels_refused(tmp_path, labels, message):
    data = _em_copy(tmp_path / "em", labels)
    datalist = load_datalist(data, layout="isbi2012_em")
    with pytest.raises(TrainingSetupError, match=message):
        check_training_labels(datalist[:20], datalist[20:])


def test_real_labels_pass_and_threshold_mode(tmp_path):
    datalist = load_datalist(EMBEDDED_DATA / "isbi2012_em", layout="isbi2012_em")
    assert check_training_labels(datalist[:20], datalist[20:])
    grey = load_datalist(_em_copy(tmp_path / "em", _grey), layout="isbi2012_em")
    assert check_training_labels(grey[:20], grey[20:], label_threshold=127)  # thresholded: only emptiness counts


def test_safe_cache_dataset_joins_its_workers_before_raising(tmp_path):
    """MONAI's CacheDataset raises while its other threads still run transforms (exit 134 at interpreter exit);
    this one skips the rest, joins them, and raises the item's error."""
    datalist = load_datalist(_em_copy(tmp_path / "em", _grey), layout="isbi2012_em")
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="BinarizeLabeld") as err:
        SafeCacheDataset(datalist, Compose(load_transforms()), num_workers=4, progress=False)
    assert "train-labels.tif: not a binary mask, values {0, 128, 255}" in str(err.value.__cause__)
    assert threading.active_count() == before
    good = load_datalist(EMBEDDED_DATA / "isbi2012_em", layout="isbi2012_em")[:4]
    assert len(SafeCacheDataset(good, Compose(load_transforms()), num_workers=2, progress=False)) == 4


def _train(tmp_path, data, *overrides):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(TRAIN_JSON),
        "--bundle_root",
        str(tmp_path / "bundle"),
        "--dataset_dir",
        str(data),
        "--epochs",
        "1",
        *overrides,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_training_command_stops_with_one_line(tmp_path):
    """The commands of the issue: exit status 2, one ERROR line, no traceback, no abort, nothing written."""
    grey = _em_copy(tmp_path / "grey", _grey)
    empty = _em_copy(tmp_path / "empty", lambda real, images: np.zeros_like(real))
    cases = [
        ((grey,), "label file(s) are not binary masks"),
        ((empty,), "every training label is empty"),
        ((grey, "--epochz", "1"), "--epochz: not an id of the config files (did you mean --epochs?)"),
        ((grey, "--epochs", "abc"), "--epochs 'abc': expected an integer"),
    ]
    for (data, *overrides), message in cases:
        done = _train(tmp_path, data, *overrides)
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR: ")]
        assert done.returncode == 2, done.stderr[-3000:]
        assert len(errors) == 1 and message in errors[0] and errors[0].endswith("Nothing was trained.")
        assert "Traceback" not in done.stderr and "terminate called" not in done.stderr
    assert not (tmp_path / "bundle").exists()
