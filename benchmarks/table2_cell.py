# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""One Table 2 cell (model x data set): the bundle's training command with the cell's overrides, run as a process
that a deadline can stop and a later call resumes, then its evaluation; one row in the results."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO
from benchmarks.machine import cpu_cores, cpu_model
from benchmarks.table2_evaluate import evaluate_cell, history_from_events, split_sizes
from benchmarks.table2_protocol import DATASETS, SETTING_KEYS, config_file, log, recipe, repo_relative
from benchmarks.table2_results import append_result, write_history

__all__ = [
    "bundle_overrides",
    "cli_args",
    "environment",
    "eval_command",
    "literal",
    "run_cell",
    "run_process",
    "show_command",
    "stop_process",
    "train_command",
]


def bundle_overrides(
    settings: dict[str, Any], model: str, dataset: str, data_dir: Path, run_dir: Path, device: str | None = None
) -> dict[str, str]:
    """Command-line overrides of the bundle for one cell, as strings (``python -m monai.bundle`` parses them).

    Args:
        settings: see :func:`settings_from_args`.
        model: ``--network_name``.
        dataset: key of :data:`DATASETS`.
        data_dir: the data set's folder.
        run_dir: the cell's folder: checkpoints in ``models/``, TensorBoard events in ``eval/``.
        device: ``"cpu"`` or ``"cuda"`` to force a device (``None``: the bundle's choice, a GPU when there is one).
    """
    o = {
        "network_name": model,
        "dataset_dir": repo_relative(data_dir),
        "epochs": str(settings["epochs"]),
        "batch_size": str(settings["batch_size"]),
        "seed": str(settings["seed"]),
        "ckpt_dir": repo_relative(run_dir / "models"),
        "output_dir": repo_relative(run_dir / "eval"),
        "progress": "false",
        "log_images": "false",
    }
    if settings.get("patch_size"):
        o["train_patch_size"] = str([settings["patch_size"]] * 2)
    if settings.get("train_subset"):
        o["train_datalist"] = f"$@split[0][:{settings['train_subset']}]"
    if settings.get("val_subset"):
        o["val_datalist"] = f"$@split[1][:{settings['val_subset']}]"
    if settings.get("image_size"):  # smoke runs: resize images (area) and masks (nearest) after the intensity step
        intensity = json.loads(config_file(dataset).read_text())["image_intensity"]
        resize = {
            "_target_": "Resized",
            "keys": ["image", "label"],
            "spatial_size": [settings["image_size"]] * 2,
            "mode": ["area", "nearest"],
        }
        o["image_intensity"] = literal(list(intensity) + [resize])
    if device == "cpu":
        o["device"], o["amp"] = '$torch.device("cpu")', "$False"
    elif device == "cuda":
        o["device"] = '$torch.device("cuda:0")'
    for key, value in settings.get("overrides", []):
        o[key] = value
    return o


def literal(obj: Any) -> str:
    """A Python literal of JSON-like data with double-quoted strings (reads well inside single shell quotes)."""
    if isinstance(obj, str):
        return json.dumps(obj)
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(literal(x) for x in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {literal(v)}" for k, v in obj.items()) + "}"
    return repr(obj)


def cli_args(overrides: dict[str, str]) -> list[str]:
    """``--key value`` pairs."""
    return [a for k, v in overrides.items() for a in (f"--{k}", v)]


def train_command(dataset: str, overrides: dict[str, str], resume: bool = False) -> list[str]:
    """The bundle's training command for one cell (run from the repository root)."""
    config = repo_relative(config_file(dataset))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config]
    return cmd + cli_args(overrides) + (["--resume", "true"] if resume else [])


def eval_command(dataset: str, overrides: dict[str, str], out_dir: Path) -> list[str]:
    """The bundle's evaluation command equivalent to what :func:`evaluate_cell` runs in this process."""
    train = repo_relative(config_file(dataset))
    configs = literal([train, train.replace("train.json", "evaluate.json")])
    return [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", configs] + cli_args(
        {**overrides, "output_dir": repo_relative(out_dir)}
    )


def show_command(cmd: Sequence[str]) -> str:
    """A command as one would type it (``python`` for this interpreter)."""
    return shlex.join(["python" if i == 0 and c == sys.executable else c for i, c in enumerate(cmd)])


def run_process(cmd: Sequence[str], log_path: Path, deadline: float | None, tag: str) -> tuple[int, float, bool]:
    """Run ``cmd`` from the repository root, its output appended to ``log_path``, stopped at ``deadline``.

    The validation lines (``Metrics --``) are echoed with ``tag``. At the deadline (a ``time.time()`` value) the
    process group gets SIGTERM, then SIGKILL after 10 s.

    Returns:
        the exit status, the seconds it ran, and whether it was stopped at the deadline.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    start = time.time()
    with open(log_path, "a") as out:
        out.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')}: {show_command(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if "Metrics --" in line:
                    print(f"    {tag}: {line.strip().split(' - ')[-1]}", flush=True)
            out.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stopped = False
        try:
            while proc.poll() is None:
                if deadline is not None and time.time() >= deadline:
                    stopped = True
                    stop_process(proc)
                    break
                time.sleep(0.5)
        except BaseException:
            stop_process(proc)
            raise
        finally:
            proc.wait()
            reader.join(timeout=10)
    return proc.returncode, time.time() - start, stopped


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def environment() -> dict[str, str]:
    """Device and library versions of this process."""
    import monai
    import torch

    return {
        "cpu": f"{cpu_model()} ({cpu_cores()} cores)",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


def _last_epoch(ckpt_dir: Path) -> int:
    from pyconv_monai.handlers import latest_checkpoint

    path = latest_checkpoint(str(ckpt_dir), required=False)
    return 0 if path is None else int(Path(path).name[len("checkpoint_epoch=") : -len(".pt")])


def _load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"attempts": []}


def _save_state(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, run_dir / "state.json")


def run_cell(
    model: str,
    dataset: str,
    settings: dict[str, Any],
    args: argparse.Namespace,
    env: dict[str, str],
    deadline: float | None,
) -> str:
    """Train (or resume) and evaluate one cell; append its row to the results.

    Returns:
        ``"done"``, ``"stopped"`` (deadline reached; resumable) or ``"failed"``.
    """
    results_dir = Path(args.results_dir)
    tag = f"{DATASETS[dataset].label}/{model}"
    data_dir = Path(args.data_root) / DATASETS[dataset].folder
    run_dir = results_dir / dataset / model
    ckpt_dir = run_dir / "models"
    overrides = bundle_overrides(settings, model, dataset, data_dir, run_dir, args.device)
    state = _load_state(run_dir)
    done_epochs = _last_epoch(ckpt_dir)
    if done_epochs == 0:  # nothing to resume: start clean (events of a run killed in its first epoch go too)
        for sub in ("models", "eval", "final"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
        state = {"attempts": []}
    run_dir.mkdir(parents=True, exist_ok=True)
    first_command = show_command(train_command(dataset, overrides))
    state.setdefault("command", first_command)
    if done_epochs < settings["epochs"]:
        resume = done_epochs > 0
        cmd = train_command(dataset, overrides, resume=resume)
        log(f"{tag}: training, {'resumed after epoch ' + str(done_epochs) if resume else 'from scratch'}")
        rc, seconds, stopped = run_process(cmd, run_dir / "train.log", deadline, tag)
        state["attempts"].append(
            {"resumed_after": done_epochs, "seconds": round(seconds, 1), "rc": rc, "stopped": stopped}
        )
        _save_state(run_dir, state)
        if stopped:
            log(f"{tag}: stopped at the deadline after {seconds:.0f} s, epoch {_last_epoch(ckpt_dir)} saved")
            return "stopped"
        if rc != 0:
            tail = (run_dir / "train.log").read_text()[-2000:]
            log(f"{tag}: training failed (exit {rc}); log {run_dir / 'train.log'}:\n{tail}")
            append_result(results_dir, {"model": model, "dataset": dataset, "status": "failed", "rc": rc})
            return "failed"
    n_train, n_val = split_sizes(dataset, overrides)
    iterations = math.ceil(n_train / settings["batch_size"])
    history = history_from_events(run_dir / "eval", iterations)
    write_history(run_dir / "history.csv", history)
    log(f"{tag}: evaluating the best checkpoint on {n_val} validation cases")
    final = evaluate_cell(dataset, overrides, run_dir)
    scored = [h for h in history if not math.isnan(h["val_mean_dice"])]
    best = max(scored, key=lambda h: h["val_mean_dice"]) if scored else None
    attempts = state["attempts"]
    train_seconds = sum(a["seconds"] for a in attempts)
    row = {
        "model": model,
        "dataset": dataset,
        "status": "ok",
        "val_miou": round(final["val_miou"], 6),
        "val_fg_iou": round(final["val_fg_iou"], 6),
        "val_dice": round(final["val_dice"], 6),
        "best_epoch": best["epoch"] if best else None,
        "best_epoch_val_dice": round(best["val_mean_dice"], 6) if best else None,
        "epochs": _last_epoch(ckpt_dir),
        **{k: settings[k] for k in SETTING_KEYS if k != "epochs"},
        "n_train": n_train,
        "n_val": final["n_val"],
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(1, settings["epochs"]), 2),
        "attempts": len(attempts),
        "eval_seconds": final["eval_seconds"],
        "device": env["gpu"] or f"CPU: {env['cpu']}",
        "torch": env["torch"],
        "monai": env["monai"],
        "python": env["python"],
        "command": state["command"],
        "eval_command": show_command(eval_command(dataset, overrides, run_dir / "final")),
        "runner_command": args.parent_command or args.runner_command,
        "jobs": args.parent_jobs or 1,
        "recipe": recipe(),
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    append_result(results_dir, row)
    log(f"{tag}: MIoU {row['val_miou']:.4f}, Dice {row['val_dice']:.4f} ({train_seconds:.0f} s training)")
    return "done"
