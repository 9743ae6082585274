"""The Model Zoo's unit tests for ``neuron_em_segmentation`` (the pattern of its ``ci/unit_tests/test_<bundle>.py``, see
``tests/bundles/zoo.py``), on the embedded EM stack (data/isbi2012_em) with a 1-epoch, 2 + 1 item budget."""

from __future__ import annotations

import math

from tests.bundles.zoo import eval_case, infer_case, train_evaluate_case

BUNDLE = "neuron_em_segmentation"


def test_train_eval_config(tmp_path):
    """train.json, then train.json + evaluate.json as workflow "train": properties complete, both run."""
    root = train_evaluate_case(BUNDLE, tmp_path, None)
    assert (root / "models" / "checkpoint_epoch=1.pt").is_file()  # the latest-checkpoint handler saved too


def test_eval_config(tmp_path):
    """train.json + evaluate.json as workflow "eval" with the shipped weights: a real Dice on a real slice."""
    metrics = eval_case(BUNDLE, tmp_path, None)
    assert not math.isnan(metrics["val_mean_dice"]) and metrics["val_mean_dice"] > 0.85  # shipped weights: 0.94


def test_infer_config(tmp_path, em_stack):
    """inference.json as workflow "infer" with the shipped weights on real slices (2 of the embedded stack):
    it writes a segmentation."""
    import tifffile

    image = tmp_path / "em" / "stack.tif"
    image.parent.mkdir()
    tifffile.imwrite(image, em_stack[0][:2], photometric="minisblack")
    written = infer_case(BUNDLE, tmp_path, str(image))
    assert written, "inference wrote nothing"
