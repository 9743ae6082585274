import os

import pytest

from pyconv_monai.handlers import latest_checkpoint
from pyconv_monai.utils import as_bool, preserve_existing
from pyconv_monai.workflows import require_dataset
from pyconv_monai.workflows.bundle import _config_root_from_argv


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "training", "--config_file", "bundles/b/configs/train.json"], "bundles/b/configs"),
        (["run", "--config_file=configs/train.json", "--epochs", "2"], "configs"),
        (["run", "--config_file", "['b/configs/train.json', 'b/configs/multi_gpu_train.json']"], "b/configs"),
        (["run", "--epochs", "2"], None),
    ],
)
def test_config_root_from_command_line(argv, expected):
    root = _config_root_from_argv(argv)
    assert (str(root) if root else None) == expected


@pytest.mark.parametrize("value, expected", [(True, True), ("true", True), ("False", False), ("0", False), (0, False)])
def test_as_bool(value, expected):
    assert as_bool(value) is expected


def test_as_bool_rejects_typos():
    with pytest.raises(ValueError, match="expected a boolean flag"):
        as_bool("ture")


def test_latest_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        latest_checkpoint(str(tmp_path))
    assert latest_checkpoint(str(tmp_path), required=False) is None
    for name in ["checkpoint_epoch=2.pt", "checkpoint_epoch=10.pt", "model.pt"]:
        (tmp_path / name).write_bytes(b"x")
    assert latest_checkpoint(str(tmp_path)).endswith("checkpoint_epoch=10.pt")


def test_preserve_existing_never_overwrites(tmp_path):
    assert preserve_existing(str(tmp_path / "model.pt")) is None
    (tmp_path / "model.pt").write_text("first")
    kept = preserve_existing(str(tmp_path / "model.pt"))
    assert not (tmp_path / "model.pt").exists() and open(kept).read() == "first"
    (tmp_path / "model.pt").write_text("second")
    os.utime(tmp_path / "model.pt", (os.path.getmtime(kept),) * 2)  # same timestamp: a second name is found
    kept2 = preserve_existing(str(tmp_path / "model.pt"))
    assert kept2 != kept and open(kept2).read() == "second" and open(kept).read() == "first"


def test_require_dataset_says_where_to_get_it_and_how_to_pass_it(tmp_path):
    assert require_dataset(str(tmp_path)) == str(tmp_path)
    missing = tmp_path / "lung_ct_2d"
    with pytest.raises(FileNotFoundError) as e:
        require_dataset(str(missing), "Kaggle's lungs, https://www.kaggle.com/kmader/finding-lungs-in-ct-data")
    message = str(e.value)
    assert str(missing) in message and "kaggle.com/kmader" in message and "--dataset_dir" in message
