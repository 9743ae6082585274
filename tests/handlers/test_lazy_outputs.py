"""Handlers write nothing when built, and keep an earlier run's files when they first write (issue 10, part 5)."""

from __future__ import annotations

import csv

import torch
from ignite.engine import Engine, Events
from pyconv_monai.handlers import AtomicCheckpointSaver, AtomicDiskSaver, LazySummaryWriter, MetricsHistorySaver


def test_disk_saver_creates_nothing_until_it_saves_and_keeps_the_earlier_file_then(tmp_path):
    folder = tmp_path / "models"
    saver = AtomicDiskSaver(folder, filename="model.pt", keep_existing=True)
    assert not folder.exists()
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"earlier")
    saver = AtomicDiskSaver(folder, filename="model.pt", keep_existing=True)
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]  # building moved nothing
    saver({"w": torch.ones(1)}, "ignored.pt")
    kept = [p for p in folder.glob("model.*.pt")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"earlier"
    saver({"w": torch.zeros(1)}, "ignored.pt")  # later saves of the same run replace its own file
    assert len(list(folder.glob("model.*.pt"))) == 1 and torch.load(folder / "model.pt")["w"].item() == 0


def test_disk_saver_keeps_files_matching_a_pattern_and_claim_turns_it_off(tmp_path):
    for name in ["checkpoint_epoch=3.pt", "checkpoint_epoch=12.pt", "model.pt"]:
        (tmp_path / name).write_bytes(name.encode())
    saver = AtomicDiskSaver(tmp_path, keep_existing=r"checkpoint_epoch=\d+\.pt")
    saver({"w": torch.ones(1)}, "checkpoint_epoch=1.pt")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "checkpoint_epoch=1.pt" in names and "model.pt" in names
    assert "checkpoint_epoch=3.pt" not in names and "checkpoint_epoch=12.pt" not in names
    assert sorted(p.read_bytes() for p in tmp_path.glob("checkpoint_epoch=*.*.pt")) == [
        b"checkpoint_epoch=12.pt",
        b"checkpoint_epoch=3.pt",
    ]
    resumed = AtomicDiskSaver(tmp_path, filename="model.pt", keep_existing=True)
    resumed.claim()
    resumed({"w": torch.ones(1)}, "ignored.pt")
    assert not list(tmp_path.glob("model.*.pt"))


def test_checkpoint_saver_resumed_with_a_best_model_owns_it(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"this run's best model before it was killed")
    net = torch.nn.Linear(1, 1)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_name="dice",
        key_metric_filename="model.pt", keep_existing=True,
    )  # fmt: skip
    saver.load_state_dict({"_saved": [(0.5, "model_key_metric=0.5000.pt")]})
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):
        e.state.metrics["dice"] = 0.9

    saver.attach(engine)
    engine.run([0], max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert set(torch.load(tmp_path / "model.pt")) == {"weight", "bias"}


def test_lazy_summary_writer_creates_its_event_file_at_the_first_write(tmp_path):
    log_dir = tmp_path / "eval"
    writer = LazySummaryWriter(log_dir=str(log_dir))
    assert not log_dir.exists()
    writer.add_scalar("train_mean_dice", 0.25, 1)
    writer.add_scalar("val_mean_dice", 0.5, 1)
    writer.close()
    files = list(log_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train_mean_dice")] == [0.25]


def _trainer(validator: Engine, epochs_run: list[int]) -> Engine:
    trainer = Engine(lambda e, b: [{"loss": torch.tensor(float(e.state.epoch))}])  # decollated, as MONAI's

    @trainer.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics["train_mean_dice"] = 0.1 * e.state.epoch
        if e.state.epoch % 2 == 0:  # validation every second epoch
            validator.state.epoch = e.state.epoch
            validator.state.metrics = {"val_mean_dice": 0.2 * e.state.epoch}
        epochs_run.append(e.state.epoch)

    return trainer


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_metrics_history_has_one_row_per_epoch_and_resumes(tmp_path):
    validator = Engine(lambda e, b: None)
    epochs: list[int] = []
    trainer = _trainer(validator, epochs)
    MetricsHistorySaver(str(tmp_path), validator=validator).attach(trainer)
    path = tmp_path / "metrics_history.csv"
    assert not path.exists()
    trainer.run([0, 1], max_epochs=3)
    rows = _rows(path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["val_mean_dice"] for r in rows] == ["", "0.4", ""]  # empty where no validation ran
    assert float(rows[2]["train_mean_dice"]) == 0.1 * 3 and float(rows[2]["train_loss"]) == 3.0

    # a run resumed after epoch 2 replaces epoch 3 onwards, keeps epochs 1 and 2
    resumed = _trainer(validator, epochs)
    MetricsHistorySaver(str(tmp_path), validator=validator).attach(resumed)
    resumed.state.epoch, resumed.state.max_epochs = 2, 4

    @resumed.on(Events.STARTED)
    def _restore(e):
        e.state.epoch = 2

    resumed.run([0, 1], max_epochs=4)
    assert [r["epoch"] for r in _rows(path)] == ["1", "2", "3", "4"]
    assert not list(tmp_path.glob("metrics_history.*.csv"))

    # a fresh run keeps the earlier run's file
    fresh = _trainer(validator, epochs)
    MetricsHistorySaver(str(tmp_path), validator=validator).attach(fresh)
    fresh.run([0, 1], max_epochs=1)
    assert [r["epoch"] for r in _rows(path)] == ["1"]
    kept = list(tmp_path.glob("metrics_history.*.csv"))
    assert len(kept) == 1 and [r["epoch"] for r in _rows(kept[0])] == ["1", "2", "3", "4"]
