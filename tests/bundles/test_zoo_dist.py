"""The Model Zoo's ``_dist`` tests (``ci/unit_tests/test_<bundle>_dist.py``, see ``tests/bundles/zoo.py``): train.json +
multi_gpu_train.json, then train.json + evaluate.json + multi_gpu_evaluate.json (its "train" properties checked), each
exported to one config and run by ``torchrun --nproc_per_node=2 -m monai.bundle run``.

The zoo runs them on 2 CUDA GPUs with NCCL; here 2 CPU processes with gloo run the same configs (no GPU in CI).
The DDP run takes about a minute (slow); the
multi-GPU configs are the same in the three bundles."""

from __future__ import annotations

import csv

import pytest

from tests.bundles.zoo import BUNDLES, TINY, dataset_dir, run_mgpu, zoo_copy
from tests.conftest import REPO


def test_the_multi_gpu_configs_are_the_same_in_every_bundle():
    """What the DDP run below covers for all three bundles: their multi_gpu_*.json are the same files (the CT
    bundles' DDP runs are in benchmarks/zoo_checks.py, docs/model_zoo.md)."""
    for name in ("multi_gpu_train.json", "multi_gpu_evaluate.json"):
        texts = {(REPO / "bundles" / b / "configs" / name).read_text() for b in BUNDLES}
        assert len(texts) == 1, name


@pytest.mark.slow  # about a minute: two 2-process torchrun runs
def test_train_eval_mgpu_config(tmp_path):
    bundle, shared = "neuron_em_segmentation", None
    root = zoo_copy(bundle, tmp_path)
    # 4 + 2 items: each of the 2 processes trains on 2 and validates 1
    override = {**TINY, "dataset_dir": dataset_dir(bundle, shared)}
    override.update({"train_datalist": "$@split[0][:4]", "val_datalist": "$@split[1][:2]", "batch_size": 2})
    run_mgpu(root, ["train.json", "multi_gpu_train.json"], override, "train_override.json")
    assert (root / "models" / "checkpoint_epoch=1.pt").is_file()
    with open(root / "eval" / "metrics_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1  # one epoch, written once (rank 0)

    run_mgpu(
        root,
        ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
        override,
        "eval_override.json",
        check_config=True,
    )
    with open(root / "eval" / "val_mean_dice_raw.csv") as f:
        cases = [line for line in f.read().splitlines()[1:] if line.strip()]
    assert len(cases) == 2  # both ranks' validation items gathered into rank 0's file
