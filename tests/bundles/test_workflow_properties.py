"""MONAI's bundle workflow properties, and that building a bundle workflow changes no file (issue 10, parts 4, 5, 7).

The Model Zoo's CI and MONAI FL (``MonaiAlgo``) build a bundle through ``monai.bundle.ConfigWorkflow``, call
``initialize()`` and ``check_properties()`` (which builds the trainer, evaluator, datasets and handlers), and only
later run it. Building must work without the lung and liver data sets (they are not in the repository), and must
move, write or delete nothing: the shipped ``models/model.pt`` stays where the inference config finds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import EMBEDDED_DATA, REPO

BUNDLES = ["neuron_em_segmentation", "lung_ct_segmentation", "liver_ct_segmentation"]


def copy_bundle_with_weights(bundle: str, root: Path) -> Path:
    """``root/bundles/<bundle>`` (with its shipped weights) beside ``root/data``, a link to the repository's data
    folder: the configs' default ``dataset_dir`` resolves as in the repository, and nothing is written there."""
    target = root / "bundles" / bundle
    shutil.copytree(REPO / "bundles" / bundle, target, ignore=shutil.ignore_patterns("eval"))
    if not (root / "data").exists():
        (root / "data").symlink_to(EMBEDDED_DATA, target_is_directory=True)
    return target


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder``: relative name -> (kind, size, mtime in ns, sha256)."""
    out: dict[str, tuple] = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(folder))
        if path.is_dir():
            out[rel] = ("dir", 0, st.st_mtime_ns, "")
        else:
            out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def workflow(bundle_dir: Path, configs: list[str], workflow_type: str | None, **override):
    """The bundle's workflow as MONAI FL and the Model Zoo's CI build it: ``bundle_root`` given (the configs' "."
    would be pytest's working directory)."""
    from monai.bundle import ConfigWorkflow

    files = [str(bundle_dir / "configs" / c) for c in configs]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        workflow_type=workflow_type,
        logging_file=False,  # keep pytest's logging set-up
        **{"bundle_root": str(bundle_dir), **override},
    )


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("workflow_type, config", [("train", "train.json"), ("infer", "inference.json")])
def test_check_properties_finds_every_property(bundle, workflow_type, config, tmp_path):
    """``initialize()`` then ``check_properties()`` returns ``[]`` (required properties present, optional ones under
    MONAI's ids), with the default data: the embedded EM stack; no lung or liver data set."""
    bundle_dir = copy_bundle_with_weights(bundle, tmp_path)
    wf = workflow(bundle_dir, [config], workflow_type)
    wf.initialize()
    assert wf.check_properties() == []
    if workflow_type == "train":
        handlers = wf.parser["train#handlers"]
        assert all(isinstance(h, dict) and "_target_" in h for h in handlers), "handlers must be handler dicts"
        assert wf.trainer.state.key_metric_name == "train_mean_dice"  # training Dice and MeanIoU (issue 10, part 3)
        assert set(wf.parser["train#additional_metrics"]) == {"train_miou"}
        has_data = len(wf.train_dataset) > 0
        assert has_data == (bundle == "neuron_em_segmentation")  # the CT sets are not in the repository
    else:
        assert isinstance(wf.dataset, torch.utils.data.Dataset)
        assert wf.evaluator is wf.parser.get_parsed_content("evaluator")


def test_a_handler_is_overridden_by_its_id(tmp_path):
    """Handlers are config items: one can be changed or disabled by its id, as in the Model Zoo's bundles."""
    bundle_dir = copy_bundle_with_weights("neuron_em_segmentation", tmp_path)
    wf = workflow(
        bundle_dir,
        ["train.json"],
        "train",
        **{"train#handlers#0#interval": 3, "train#handlers#4#_disabled_": True, "early_stop_patience": 2},
    )
    wf.initialize()
    handlers = wf.parser.get_parsed_content("train#handlers")
    from monai.handlers import TensorBoardStatsHandler, ValidationHandler
    from pyconv_monai.handlers import ValidationEarlyStopHandler

    validation = [h for h in handlers if isinstance(h, ValidationHandler)]
    assert len(validation) == 1 and validation[0].interval == 3
    assert not any(isinstance(h, TensorBoardStatsHandler) for h in handlers)
    assert any(isinstance(h, ValidationEarlyStopHandler) and h.patience == 2 for h in handlers)
    default = workflow(bundle_dir, ["train.json"], "train")
    default.initialize()
    default_handlers = default.parser.get_parsed_content("train#handlers")
    assert not any(isinstance(h, ValidationEarlyStopHandler) for h in default_handlers)  # patience 0: disabled


MULTI_GPU_BUILD = """
import os, sys
from monai.bundle import ConfigWorkflow
bundle, data = sys.argv[1:3]
wf = ConfigWorkflow(config_file=[bundle + "/configs/train.json", bundle + "/configs/multi_gpu_train.json"],
                    workflow_type="train", logging_file=False, bundle_root=bundle, dataset_dir=data,
                    layout="isbi2012_em")
wf.initialize()
print("PROPERTIES", wf.check_properties())
wf.finalize()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_building_any_workflow_changes_no_file(bundle, tmp_path):
    """Every config of the bundle (train, train + evaluate, inference, train + multi_gpu_train in a one-process
    gloo group), initialized and built as a property check builds it, leaves the bundle folder (and its shipped
    ``models/model.pt``) exactly as it was: same names, sizes, times and contents; no ``eval/`` folder.

    The multi-GPU config needs a data set to be built (its samplers refuse an empty one, and its ``initialize``
    stops without one): it is built on the embedded EM stack, whatever the bundle."""
    bundle_dir = copy_bundle_with_weights(bundle, tmp_path)
    assert (bundle_dir / "models" / "model.pt").is_file()
    before = snapshot(bundle_dir)

    train = workflow(bundle_dir, ["train.json"], "train")
    train.initialize()
    assert train.check_properties() == []
    evaluate = workflow(bundle_dir, ["train.json", "evaluate.json"], None)
    evaluate.initialize()
    evaluate.parser.get_parsed_content("validate#evaluator")
    infer = workflow(bundle_dir, ["inference.json"], "infer")
    infer.initialize()
    assert infer.check_properties() == []
    del train, evaluate, infer

    env = {**os.environ, "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MULTI_GPU_BUILD), str(bundle_dir), str(EMBEDDED_DATA / "isbi2012_em")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PROPERTIES []" in done.stdout

    after = snapshot(bundle_dir)
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not changed, changed


@pytest.mark.parametrize(
    "bundle, config",
    [("lung_ct_segmentation", "train.json"), ("liver_ct_segmentation", "train.json"),
     ("lung_ct_segmentation", "inference.json")],
)  # fmt: skip
def test_missing_data_set_stops_the_run_with_where_to_get_it(bundle, config, tmp_path):
    """Without ``--dataset_dir`` (the training sets are not at their default path inside the repository), or with
    one that does not exist, the run stops with an error naming the path, the data set's source and the option to
    pass it; nothing is written."""
    bundle_dir = copy_bundle_with_weights(bundle, tmp_path)
    before = snapshot(bundle_dir)
    given = ["--dataset_dir", str(tmp_path / "no_such_folder")] if config == "inference.json" else []
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"bundles/{bundle}/configs/{config}",
         "--bundle_root", f"bundles/{bundle}", *given],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0
    message = done.stderr
    assert "FileNotFoundError: no data set at" in message and "--dataset_dir" in message, message[-3000:]
    if config == "train.json":
        source = "kaggle.com/kmader" if bundle == "lung_ct_segmentation" else "u_net_liver"
        assert source in message
    assert snapshot(bundle_dir) == before


@pytest.mark.parametrize("bundle", BUNDLES)
def test_default_dataset_dir_is_inside_the_repository(bundle):
    """No config's default ``dataset_dir`` points outside the repository."""
    from monai.bundle import ConfigParser

    root = REPO / "bundles" / bundle
    for name in ["train.json", "inference.json"]:
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / name))
        parser["bundle_root"] = str(root)
        path = Path(parser.get_parsed_content("dataset_dir")).resolve()
        assert REPO.resolve() in path.parents, (name, path)


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("network_name", ["pyconvunet", "unet"])
def test_pyconv_mode_keeps_the_reference_checkpoint_layout(bundle, network_name, tmp_path):
    """``pyconv_mode`` switches how PyConv is computed (``optimize_pyconv``), not the function or the state_dict:
    the state_dict keys (what checkpoints hold) are the reference ones, the shipped weights load strictly, the
    outputs match the reference mode, and a network without PyConvs (U-Net) is left as it is."""
    from monai.bundle import ConfigParser
    from monai.handlers import CheckpointLoader
    from pyconv_monai.networks import pyconv_modes
    from pyconv_monai.workflows import load_checkpoint

    root = REPO / "bundles" / bundle

    def network(mode: str) -> torch.nn.Module:
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        parser.update({"bundle_root": str(root), "pyconv_mode": mode, "network_name": network_name,
                       "device": "$torch.device('cpu')"})  # fmt: skip
        return parser.get_parsed_content("network")

    reference, dense = network("reference"), network("dense")
    assert list(reference.state_dict()) == list(dense.state_dict())
    if network_name == "pyconvunet":
        assert set(pyconv_modes(dense).values()) == {"dense"}
        for net in (reference, dense):  # strict: the layout is the reference one
            load_checkpoint(CheckpointLoader(str(root / "models" / "model.pt"), {"model": net}, strict=True))
    else:
        assert pyconv_modes(dense) == {} and type(dense) is type(reference)
        dense.load_state_dict(reference.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dense.eval()(x), reference.eval()(x), atol=1e-4, rtol=1e-4)


def test_building_creates_no_output_folder(tmp_path):
    """Output folders (checkpoints, TensorBoard, metrics CSV) appear when training writes to them, not before."""
    bundle_dir = copy_bundle_with_weights("neuron_em_segmentation", tmp_path)
    out = tmp_path / "run"
    wf = workflow(bundle_dir, ["train.json"], "train", ckpt_dir=str(out / "models"), output_dir=str(out / "eval"))
    wf.initialize()
    assert wf.check_properties() == []
    assert not out.exists()
