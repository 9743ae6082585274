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


def _shipped(folder):
    """A copy of a shipped ``model.pt`` (the real weights where present, else a stand-in of the same format)."""
    from tests.conftest import REPO

    folder.mkdir(parents=True, exist_ok=True)
    real = REPO / "bundles" / "neuron_em_segmentation" / "models" / "model.pt"
    if real.is_file() and real.stat().st_size > 1000:
        (folder / "model.pt").write_bytes(real.read_bytes())
    else:
        torch.save({"w": torch.full((3,), 7.0)}, folder / "model.pt")
    return (folder / "model.pt").read_bytes()


def test_full_disk_never_renames_or_loses_the_shipped_model(tmp_path, monkeypatch):
    """Training with keep_existing (the bundles' best-model saver) on a full disk: model.pt stays, byte for byte,
    and nothing is renamed; once a save succeeds, the old file is kept beside it."""
    folder = tmp_path / "models"
    shipped = _shipped(folder)
    saver = AtomicDiskSaver(folder, filename="model.pt", keep_existing=True)
    real_save = torch.save

    def full_disk(obj, f, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        saver({"w": torch.zeros(3)}, "ignored.pt")
    assert sorted(os.listdir(folder)) == ["model.pt"] and (folder / "model.pt").read_bytes() == shipped
    monkeypatch.setattr(torch, "save", real_save)
    saver({"w": torch.zeros(3)}, "ignored.pt")
    kept = [n for n in os.listdir(folder) if n != "model.pt"]
    assert len(kept) == 1 and kept[0].startswith("model.") and (folder / kept[0]).read_bytes() == shipped
    assert torch.equal(torch.load(folder / "model.pt")["w"], torch.zeros(3))


def test_model_pt_exists_at_every_moment_of_a_kept_replacement(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    _shipped(folder)
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((folder / "model.pt").exists())
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    AtomicDiskSaver(folder, filename="model.pt", keep_existing=True)({"w": torch.ones(1)}, "x.pt")
    assert seen and all(seen)  # kept by a link, then replaced in one step: never absent


@pytest.mark.parametrize("scores", [[0.0, 0.0], [float("nan")]])
def test_zero_or_nan_dice_never_replaces_the_shipped_model(tmp_path, scores, caplog):
    folder = tmp_path / "models"
    shipped = _shipped(folder)
    net = torch.nn.Linear(2, 1)
    evaluator = _evaluator_with_scores(scores + [0.4])
    saver = AtomicCheckpointSaver(
        save_dir=str(folder),
        save_dict={"model": net},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
        keep_existing=True,
    )
    saver.attach(evaluator)
    for _ in scores:
        evaluator.run([0])
    assert sorted(os.listdir(folder)) == ["model.pt"] and (folder / "model.pt").read_bytes() == shipped
    assert "is kept, not replaced" in caplog.text
    evaluator.run([0])  # a real score: saved, and the shipped weights kept beside it
    assert len(os.listdir(folder)) == 2 and (folder / "model.pt").read_bytes() != shipped


def test_zero_dice_is_saved_where_there_are_no_earlier_weights(tmp_path, caplog):
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"model": torch.nn.Linear(2, 1)},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
    )
    evaluator = _evaluator_with_scores([0.0])
    saver.attach(evaluator)
    evaluator.run([0])
    assert (tmp_path / "model.pt").exists() and "saved anyway" in caplog.text
