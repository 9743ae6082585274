"""The Model Zoo's unit tests for ``lung_ct_segmentation`` (the pattern of its ``ci/unit_tests/test_<bundle>.py``, see
``tests/bundles/zoo.py``), on the staged lung CT slices (shared/data/lung_ct_2d) with a 1-epoch, 2 + 1 item budget."""

from __future__ import annotations

import math

import pytest

from tests.bundles.zoo import eval_case, infer_case, train_evaluate_case

BUNDLE = "lung_ct_segmentation"


@pytest.mark.slow  # 30-70 s on 2 cores: two 1-epoch trainings on 512x512 CT slices
def test_train_eval_config(tmp_path, shared_data):
    """train.json, then train.json + evaluate.json as workflow "train": properties complete, both run."""
    root = train_evaluate_case(BUNDLE, tmp_path, shared_data)
    assert (root / "models" / "checkpoint_epoch=1.pt").is_file()  # the latest-checkpoint handler saved too


def test_eval_config(tmp_path, shared_data):
    """train.json + evaluate.json as workflow "eval" with the shipped weights: a real Dice on a real slice."""
    metrics = eval_case(BUNDLE, tmp_path, shared_data)
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0 and not math.isnan(metrics["val_mean_dice"])


def test_infer_config(tmp_path, shared_data):
    """inference.json as workflow "infer" with the shipped weights on one real image: it writes a segmentation."""
    written = infer_case(BUNDLE, tmp_path, str(sorted((shared_data / "lung_ct_2d" / "2d_images").glob("*.tif"))[0]))
    assert written, "inference wrote nothing"
