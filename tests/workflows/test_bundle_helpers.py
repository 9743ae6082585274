import json
import os
from pathlib import Path

import pytest
from monai.bundle import ConfigParser
from pyconv_monai.handlers import latest_checkpoint
from pyconv_monai.utils import as_bool, bundle_dir, bundles_root, list_bundles, preserve_existing
from pyconv_monai.workflows import require_dataset

from tests.conftest import REPO


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


@pytest.mark.parametrize("bundle", list_bundles(REPO / "bundles"))
def test_configs_follow_the_model_zoo_bundle_root_convention(bundle, monkeypatch):
    """``"bundle_root": "."`` in every config that sets it: run from the bundle folder, the models, outputs and the
    default data set resolve as from ``--bundle_root <bundle folder>`` run elsewhere."""
    root = REPO / "bundles" / bundle
    setting = [p.name for p in sorted((root / "configs").glob("*.json")) if "bundle_root" in json.loads(p.read_text())]
    assert {"train.json", "inference.json"} <= set(setting)
    for name in setting:
        assert json.loads((root / "configs" / name).read_text())["bundle_root"] == ".", name
    monkeypatch.chdir(root)
    for name in ["train.json", "inference.json"]:
        here, given = ConfigParser(), ConfigParser()
        here.read_config(str(root / "configs" / name))
        given.read_config(str(root / "configs" / name))
        given["bundle_root"] = str(root)
        for key in ["ckpt_dir", "output_dir", "dataset_dir"]:
            path = Path(here.get_parsed_content(key)).resolve()
            assert path == Path(given.get_parsed_content(key)).resolve(), (name, key)
            assert (REPO / "data" if key == "dataset_dir" else root) in path.parents, (name, key, path)


def test_bundle_dir_by_name_or_folder_and_a_clear_error(tmp_path):
    names = list_bundles()
    assert {"liver_ct_segmentation", "lung_ct_segmentation", "neuron_em_segmentation"} <= set(names)
    assert bundles_root() == (REPO / "bundles").resolve()  # a source checkout / editable install: the repository's
    assert bundle_dir("liver_ct_segmentation") == (REPO / "bundles" / "liver_ct_segmentation").resolve()
    own = tmp_path / "my_bundle"
    (own / "configs").mkdir(parents=True)
    (own / "configs" / "inference.json").write_text("{}")
    assert bundle_dir(own) == own.resolve() and list_bundles(tmp_path) == ["my_bundle"]
    with pytest.raises(FileNotFoundError, match="no bundle 'no_such_bundle'.*liver_ct_segmentation"):
        bundle_dir("no_such_bundle")
    assert list_bundles(tmp_path / "missing") == []
