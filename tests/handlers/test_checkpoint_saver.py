import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from ignite.engine import Engine, Events

from pyconv_monai.handlers import AtomicCheckpointSaver, AtomicDiskSaver


def _evaluator_with_scores(scores):
    """An engine whose key metric takes the given values on successive runs."""
    engine = Engine(lambda e, b: None)
    values = iter(scores)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):
        e.state.metrics["dice"] = next(values)

    return engine


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    saver = AtomicDiskSaver(tmp_path, filename="model.pt")
    saver({"w": torch.ones(3)}, "ignored.pt")

    def broken_save(obj, f, **kwargs):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        saver({"w": torch.zeros(3)}, "ignored.pt")
    monkeypatch.undo()
    assert torch.equal(torch.load(tmp_path / "model.pt")["w"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]  # no temporary file left behind


def test_save_is_synced_to_disk_before_the_rename(tmp_path, monkeypatch):
    """What the saver adds to ignite's atomic DiskSaver: the folder made at the first save, an fsync of the whole file
    before it takes the final name, and group/other read access as ignite gives."""
    folder = tmp_path / "models"
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((os.fstat(fd).st_size, (folder / "model.pt").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    saver = AtomicDiskSaver(folder, filename="model.pt")
    assert not folder.exists()
    saver({"w": torch.ones(1000)}, "ignored.pt")
    size = (folder / "model.pt").stat().st_size
    assert synced == [(size, False)]  # every byte flushed, then renamed
    assert sorted(os.listdir(folder)) == ["model.pt"]
    assert (folder / "model.pt").stat().st_mode & 0o044 == 0o044


def test_checkpoint_survives_kill_during_saving(tmp_path):
    """Kill a process that saves a large checkpoint over and over: the file on disk always loads."""
    script = textwrap.dedent(f"""
        import torch
        from pyconv_monai.handlers import AtomicDiskSaver
        saver = AtomicDiskSaver({str(tmp_path)!r}, filename="model.pt")
        i = 0
        while True:
            saver({{"step": torch.tensor(i), "w": torch.full((8_000_000,), float(i))}}, "x.pt")
            i += 1
        """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while not (tmp_path / "model.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # several saves later, most likely in the middle of one
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = torch.load(tmp_path / "model.pt")
    assert torch.all(ckpt["w"] == float(ckpt["step"]))


def test_best_model_is_never_absent_and_tracks_the_best_score(tmp_path):
    net = torch.nn.Linear(2, 1)
    evaluator = _evaluator_with_scores([0.5, 0.7, 0.6])
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"model": net},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
    )
    saver.attach(evaluator)
    for epoch in range(3):
        with torch.no_grad():
            net.bias.fill_(epoch)
        evaluator.run([0])
        assert (tmp_path / "model.pt").exists()
    assert torch.load(tmp_path / "model.pt")["bias"].item() == 1.0  # epoch 1 had the best score 0.7


def test_best_metric_state_resumes(tmp_path):
    net = torch.nn.Linear(2, 1)
    kwargs = dict(
        save_dir=str(tmp_path),
        save_dict={"model": net},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
    )
    first = AtomicCheckpointSaver(**kwargs)
    first.attach(evaluator := _evaluator_with_scores([0.9]))
    evaluator.run([0])
    state = first.state_dict()
    # a resumed run that first sees a worse score must not replace the best model
    with torch.no_grad():
        net.bias.fill_(42.0)
    resumed = AtomicCheckpointSaver(**kwargs)
    resumed.load_state_dict(state)
    resumed.attach(evaluator := _evaluator_with_scores([0.4]))
    evaluator.run([0])
    assert torch.load(tmp_path / "model.pt")["bias"].item() != 42.0


def test_old_checkpoint_is_removed_only_after_the_new_one_is_written(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: None)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=1).attach(trainer)
    trainer.run([0], max_epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["model_epoch=1.pt"]

    def broken_save(obj, f, **kwargs):
        raise OSError("killed while saving")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        trainer.run([0], max_epochs=2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model_epoch=1.pt"]  # the previous checkpoint is still there
    torch.load(tmp_path / "model_epoch=1.pt")
