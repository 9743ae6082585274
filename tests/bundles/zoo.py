"""The MONAI Model Zoo's unit-test pattern (``ci/unit_tests`` of Project-MONAI/model-zoo), for this project's bundles.

The zoo tests a bundle by building ``monai.bundle.ConfigWorkflow`` from its configs with overrides, then
``initialize()``, ``check_properties()`` (must be empty), ``run()`` and ``finalize()`` (its ``utils.check_workflow``):
``train.json``; ``train.json`` + ``evaluate.json`` as workflow ``"train"``; ``inference.json`` as ``"infer"``; and, in
its ``_dist`` tests, ``train.json`` + ``multi_gpu_train.json`` and ``train.json`` + ``evaluate.json`` +
``multi_gpu_evaluate.json`` exported to one file and run under ``torchrun`` (``utils.export_config_and_run_mgpu_cmd``).
The zoo runs those on CUDA GPUs (NCCL); here they run on 2 CPU processes with gloo (``pyconv_monai.workflows``'s
``init_distributed`` picks it), which exercises the same configs.

The bundles are copied to ``<tmp>/models/<name>`` (the zoo's layout); every test overrides ``bundle_root``, the data
set and a tiny budget (1 epoch, 2 training and 1 validation items, no cache), as the zoo's tests do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import EMBEDDED_DATA, REPO

__all__ = [
    "BUNDLES",
    "TINY",
    "zoo_copy",
    "dataset_dir",
    "check_workflow",
    "zoo_workflow",
    "run_mgpu",
    "train_evaluate_case",
    "eval_case",
    "infer_case",
]

BUNDLES = ["neuron_em_segmentation", "lung_ct_segmentation", "liver_ct_segmentation"]
# a tiny budget: the zoo's tests override epochs, cache and workers the same way
TINY: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 2,
    "cache_rate": 0.0,
    "num_workers": 0,
    "progress": False,
    "log_images": False,
    "train_datalist": "$@split[0][:2]",
    "val_datalist": "$@split[1][:1]",
}
_SHARED = {"lung_ct_segmentation": "lung_ct_2d", "liver_ct_segmentation": "liver_ct_2d"}


def zoo_copy(bundle: str, root: Path) -> Path:
    """``root/models/<bundle>``: a copy of the repository's bundle (with its shipped weights), in the zoo's layout."""
    target = root / "models" / bundle
    shutil.copytree(REPO / "bundles" / bundle, target, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    return target


def dataset_dir(bundle: str, shared: Path | None) -> str:
    """The real data set of ``bundle``: the embedded EM stack, or the staged lung / liver slices under ``shared``."""
    if bundle == "neuron_em_segmentation":
        return str(EMBEDDED_DATA / "isbi2012_em")
    assert shared is not None, f"{bundle} needs the staged data sets"
    return str(shared / _SHARED[bundle])


def _files(bundle_root: Path) -> dict[str, str]:
    configs = bundle_root / "configs"
    return {"logging_file": str(configs / "logging.conf"), "meta_file": str(configs / "metadata.json")}


def zoo_workflow(bundle_root: Path, configs: list[str], workflow_type: str, **override: Any):
    """``ConfigWorkflow`` as the zoo's tests build it: config file(s), ``logging.conf``, ``metadata.json``,
    overrides."""
    from monai.bundle import ConfigWorkflow

    files = [str(bundle_root / "configs" / c) for c in configs]
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=files if len(files) > 1 else files[0],
        **_files(bundle_root),
        **{"bundle_root": str(bundle_root), **override},
    )


def check_workflow(workflow: Any, check_properties: bool = True) -> None:
    """The zoo's ``utils.check_workflow``: initialize, check the properties (none missing), run, finalize."""
    workflow.initialize()
    if check_properties:
        missing = workflow.check_properties()
        assert not missing, f"check properties for workflow failed: {missing}"
    workflow.run()
    workflow.finalize()


@contextlib.contextmanager
def _one_process_group() -> Iterator[None]:
    """The environment ``torchrun --nproc_per_node=1`` gives its process (rank 0 of 1, a free local port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_mgpu(
    bundle_root: Path,
    configs: list[str],
    override: dict[str, Any],
    output_name: str,
    check_config: bool = False,
    nproc: int = 2,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """The zoo's ``export_config_and_run_mgpu_cmd``: merge ``configs`` and ``override`` into one exported config,
    optionally check its ``"train"`` properties, and run it with ``torchrun --standalone --nproc_per_node=nproc -m
    monai.bundle run`` (here: ``nproc`` CPU processes, gloo).

    Returns:
        the finished ``torchrun`` process (an ``AssertionError`` with its output's tail if it failed).
    """
    from monai.bundle import ConfigParser, ConfigWorkflow

    parser = ConfigParser()
    parser.read_config([str(bundle_root / "configs" / c) for c in configs])
    parser.update(pairs={"bundle_root": str(bundle_root), **override})
    output = bundle_root / "configs" / output_name
    ConfigParser.export_config_file(parser.config, str(output), indent=4)
    if check_config:  # the zoo runs its _dist runner under a 1-process `torchrun`: this check joins such a group
        with _one_process_group():
            engine = ConfigWorkflow(workflow_type="train", config_file=str(output), **_files(bundle_root))
            engine.initialize()
            missing = engine.check_properties()
            engine.finalize()
        assert not missing, f"check properties for overridden mgpu configs failed: {missing}"
    files = _files(bundle_root)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", str(output), "--meta_file", files["meta_file"]]
    cmd += ["--logging_file", files["logging_file"]]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    # the zoo puts the bundle root on PYTHONPATH (its own code); the checkout provides pyconv_monai here
    env["PYTHONPATH"] = os.pathsep.join([str(bundle_root), str(REPO)])
    proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


def train_evaluate_case(bundle: str, tmp: Path, shared: Path | None) -> Path:
    """The zoo's ``test_train_eval_config``: ``train.json`` alone, then ``train.json`` + ``evaluate.json`` (workflow
    ``"train"``, as the zoo builds it), each initialized, property-checked, run and finalized.

    Returns:
        the bundle copy (its ``models/model.pt`` is the weights the 1-epoch run saved).
    """
    root = zoo_copy(bundle, tmp)
    override = {"dataset_dir": dataset_dir(bundle, shared), **TINY}
    check_workflow(zoo_workflow(root, ["train.json"], "train", **override))
    assert (root / "models" / "model.pt").is_file()
    assert (root / "eval" / "metrics_history.csv").is_file()
    check_workflow(zoo_workflow(root, ["train.json", "evaluate.json"], "train", **override))
    assert (root / "eval" / "val_mean_dice_raw.csv").is_file()
    return root


def eval_case(bundle: str, tmp: Path, shared: Path | None) -> dict[str, float]:
    """``train.json`` + ``evaluate.json`` as MONAI's ``"eval"`` workflow (``InferProperties``: ``dataset``,
    ``evaluator``, ``inferer``) with the shipped weights, on one validation item.

    Returns:
        the evaluator's metrics.
    """
    root = zoo_copy(bundle, tmp)
    override = {"dataset_dir": dataset_dir(bundle, shared), **TINY}
    wf = zoo_workflow(root, ["train.json", "evaluate.json"], "eval", **override)
    check_workflow(wf)
    assert len(wf.dataset) == 1
    assert (root / "eval" / "val_mean_dice_summary.csv").is_file()
    return dict(wf.evaluator.state.metrics)


def infer_case(bundle: str, tmp: Path, image: str) -> list[Path]:
    """The zoo's ``test_infer_config``: ``inference.json`` as workflow ``"infer"`` on ``image``, shipped weights.

    Returns:
        the files written under the overridden ``output_dir``.
    """
    root = zoo_copy(bundle, tmp)
    out = tmp / "infer_out"
    wf = zoo_workflow(root, ["inference.json"], "infer", dataset_dir=image, output_dir=str(out), progress=False)
    check_workflow(wf)
    return sorted(p for p in out.rglob("*") if p.is_file())
