"""MONAI FL's ``MonaiAlgo`` (in MONAI itself) on the EM bundle: one tiny round on the real embedded EM stack trains,
``get_weights`` sends the update and ``evaluate`` scores the global weights; without the data set the round fails
with the data-set message instead of "succeeding" with 0 iterations (issue 20)."""

from __future__ import annotations

import pytest
import torch
from monai.fl.client import MonaiAlgo
from monai.fl.utils.constants import ExtraItems, FlStatistics, WeightType
from monai.fl.utils.exchange_object import ExchangeObject

from tests.bundles.test_workflow_properties import copy_bundle_with_weights

# one epoch on 64 x 64 patches, batch 4: 5 iterations over the 20 training slices
TINY = {"train_patch_size": [64, 64], "batch_size": 4, "num_workers": 0, "log_images": False, "progress": False}


def _algo(bundle_dir, **overrides) -> MonaiAlgo:
    kwargs = {**TINY, **overrides}
    algo = MonaiAlgo(bundle_root=str(bundle_dir), local_epochs=1, train_kwargs=kwargs, eval_kwargs=dict(kwargs))
    algo.initialize(extra={ExtraItems.CLIENT_NAME: "site-1"})
    return algo


def _global_weights(algo: MonaiAlgo) -> ExchangeObject:
    return ExchangeObject(weights={k: v.clone() for k, v in algo.trainer.network.state_dict().items()})


@pytest.mark.slow
def test_a_round_trains_sends_weights_and_evaluates(tmp_path):
    algo = _algo(copy_bundle_with_weights("neuron_em_segmentation", tmp_path))
    start = _global_weights(algo)
    algo.train(start)
    update = algo.get_weights()
    assert update.weight_type == WeightType.WEIGHT_DIFF
    assert update.statistics[FlStatistics.NUM_EXECUTED_ITERATIONS] == 5
    assert set(update.weights) == set(start.weights)
    assert any(float(d.abs().max()) > 0 for d in update.weights.values())  # the round changed the weights
    metrics = algo.evaluate(start).metrics
    assert 0.0 < metrics["val_mean_dice"] <= 1.0
    algo.finalize()


def test_a_round_without_the_data_set_fails_with_the_data_set_message(tmp_path):
    """``initialize`` (the FL client's set-up) still works without the data; the round (``train``) then stops with
    ``require_dataset``'s message, not 0 iterations; nothing is written."""
    bundle_dir = copy_bundle_with_weights("neuron_em_segmentation", tmp_path)
    missing = tmp_path / "nowhere"
    algo = _algo(bundle_dir, dataset_dir=str(missing))
    assert len(algo.trainer.data_loader) == 0
    with pytest.raises(FileNotFoundError, match=f"no data set at {missing}.*ISBI 2012 EM"):
        algo.train(_global_weights(algo))
    assert algo.trainer.state.iteration == 0
    assert not (bundle_dir / "eval").exists()


def test_an_empty_data_set_folder_fails_the_set_up(tmp_path):
    """An existing folder without the layout's files stops already in ``initialize``, naming what it expects."""
    bundle_dir = copy_bundle_with_weights("neuron_em_segmentation", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception) as raised:
        _algo(bundle_dir, dataset_dir=str(tmp_path / "empty"))
    chain, cause = [], raised.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    assert any("train-volume.tif not found; layout 'isbi2012_em'" in c for c in chain)


def test_the_trainer_without_data_refuses_to_run_even_when_its_folder_exists(tmp_path):
    """A data loader that is empty although ``dataset_dir`` exists (e.g. a split that left no training case)."""
    from pyconv_monai.workflows import SegmentationTrainer

    net = torch.nn.Conv2d(1, 1, 1)
    trainer = SegmentationTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=torch.utils.data.DataLoader([]), network=net,
        optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=torch.nn.MSELoss(),
        dataset_dir=str(tmp_path), dataset_source="a test set",
    )  # fmt: skip
    with pytest.raises(ValueError, match=f"no training cases from {tmp_path}.*a test set"):
        trainer.run()
