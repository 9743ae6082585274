# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Checks the training configs run before training starts: the command-line overrides and the training labels.

MONAI's ``python -m monai.bundle run`` takes any ``--key value``: a typo (``--epochz 1``) is a new, unused config
key; ``--epochs 1.5`` runs two epochs; ``--batch_size 0`` or ``--network_name nosuch`` end in a traceback once
training has started; labels that are not binary raise inside ``CacheDataset``'s worker threads, and the process
then aborts (``terminate called without an active exception``, exit 134) because those threads still run when
Python exits. The checks here run first in the configs' ``run`` list and stop with one line naming the problem.
"""

from __future__ import annotations

import ast
import difflib
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.bundle import ConfigParser
from pyconv_monai.networks import list_networks
from pyconv_monai.transforms import LoadVolume

__all__ = ["TrainingSetupError", "check_overrides", "check_training_labels", "override_problems"]

logger = logging.getLogger(__name__)

# value rules of the training configs' ids: (kind, lowest, highest, lowest included, highest included)
VALUE_RULES: dict[str, tuple[str, float | None, float | None, bool, bool]] = {
    "epochs": ("int", 1, None, True, True),
    "batch_size": ("int", 1, None, True, True),
    "val_interval": ("int", 1, None, True, True),
    "num_workers": ("int", 0, None, True, True),
    "early_stop_patience": ("int", 0, None, True, True),
    "seed": ("int", 0, None, True, True),
    "learning_rate": ("float", 0, None, False, True),
    "val_fraction": ("float", 0, 1, False, False),
    "cache_rate": ("float", 0, 1, True, True),
    "threshold": ("float", 0, 1, False, False),
}
# arguments of ``monai.bundle run`` / ``ConfigWorkflow`` that are not config ids
_RUN_ARGUMENTS = frozenset(
    {
        "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
        "workflow_type", "workflow", "workflow_name", "properties_path", "override",
    }
)  # fmt: skip


class TrainingSetupError(ValueError):
    """A bad override or bad training data, found before training starts."""


def _stop(message: str) -> None:
    """Stop with ``message`` as the first (and, under ``python -m monai.bundle``, the only) thing the user reads."""
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    if os.path.basename(os.path.dirname(sys.argv[0] or "")) == "bundle" and sys.argv[0].endswith("__main__.py"):
        raise SystemExit(2)  # the command line: no traceback after the line
    raise TrainingSetupError(message)


def _command_line_overrides(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The ``--key value`` pairs of a ``monai.bundle run`` command line (values parsed as ``fire`` does), and its
    config files."""
    values: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            key, sep, value = arg[2:].partition("=")
            if not sep:
                if i + 1 < len(args) and not args[i + 1].startswith("--"):
                    value, i = args[i + 1], i + 1
                else:
                    value = "True"
            values[key.replace("-", "_")] = _literal(value)
        i += 1
    files = values.get("config_file") or []
    if isinstance(files, str):
        files = [f.strip() for f in files.split(",") if f.strip()]
    return values, [os.fspath(f) for f in files]


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _ids(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every id of a config (``"train#dataset#cache_rate"``) and its value."""
    out: dict[str, Any] = {}
    items: Iterable = ()
    if isinstance(config, Mapping):
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    for key, value in items:
        name = f"{prefix}#{key}" if prefix else str(key)
        out[name] = value
        out.update(_ids(value, name))
    return out


def _value_problem(key: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot be the value of ``key`` (whose config default is ``default``), or ``None``."""
    rule = VALUE_RULES.get(key)
    if rule is None and isinstance(default, bool):
        ok = isinstance(value, bool) or str(value).lower() in ("true", "false", "1", "0", "yes", "no")
        return None if ok else f"--{key} {value!r}: expected true or false"
    if rule is None and isinstance(default, int) and not isinstance(value, str):
        rule = ("int", None, None, True, True)
    if rule is None:
        return None
    kind, low, high, low_in, high_in = rule
    if isinstance(value, str) and value.startswith(("$", "@", "%")):
        return None  # an expression or reference: checked when it is evaluated
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "an integer" if kind == "int" else "a number"
        return f"--{key} {value!r}: expected {expected} (the config's default is {default!r})"
    if kind == "int" and float(value) != int(value):
        return f"--{key} {value!r}: expected a whole number (the config's default is {default!r}), not a fraction"
    if not np.isfinite(value):
        return f"--{key} {value!r}: expected a finite number"
    if low is not None and (value < low or (value == low and not low_in)):
        return f"--{key} {value!r}: must be {'at least' if low_in else 'more than'} {low:g}"
    if high is not None and (value > high or (value == high and not high_in)):
        return f"--{key} {value!r}: must be {'at most' if high_in else 'less than'} {high:g}"
    return None


def override_problems(overrides: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``overrides`` (command-line ``--key value`` pairs) of ``config`` (the merged config files).

    An id must exist in the config (or add an argument to one of its components, ``network_def#dropout``); unknown
    ids are reported with the nearest known ids. Values must fit :data:`VALUE_RULES` and the type of the config's
    default (an integer default takes whole numbers only); ``network_name`` must be a registered network.

    Returns:
        one line per problem, empty when there is none.
    """
    ids = _ids(config)
    known = sorted(ids)
    problems = []
    for key, value in overrides.items():
        if key in _RUN_ARGUMENTS:
            continue
        if key not in ids:
            parent = key.rpartition("#")[0]
            if parent and isinstance(ids.get(parent), Mapping) and "_target_" in ids[parent]:
                continue  # a new argument of a component
            near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join('--' + n for n in near)}?)" if near else ""
            problems.append(f"--{key}: not an id of the config files{hint}")
            continue
        problem = _value_problem(key, value, ids[key])
        if problem is None and key == "network_name" and isinstance(value, str) and not value.startswith("$"):
            names = list(list_networks())
            if value not in names:
                near = difflib.get_close_matches(value, names, n=2, cutoff=0.5)
                hint = f" (did you mean {' or '.join(near)}?)" if near else ""
                problem = f"--network_name {value!r}: no such network; choose one of {', '.join(names)}{hint}"
        if problem is not None:
            problems.append(problem)
    return problems


def check_overrides(argv: Sequence[str] | None = None, config: Mapping[str, Any] | None = None) -> bool:
    """Stop before training when a command-line override is unknown or has a bad value (see
    :func:`override_problems`); the training configs call it first in ``run``.

    Args:
        argv: the command line (default ``sys.argv[1:]``); only ``--key value`` pairs count.
        config: the merged config (default: the command line's ``--config_file`` files, loaded again).

    Returns:
        ``True`` when every override is fine.

    Raises:
        TrainingSetupError: a problem, in one line (under ``python -m monai.bundle``: the line on stderr and exit
            status 2, with no traceback).
    """
    overrides, files = _command_line_overrides(sys.argv[1:] if argv is None else argv)
    if config is None:
        if not files:
            return True  # not run from a command line with config files: nothing to compare
        config = ConfigParser.load_config_files(files)
    problems = override_problems(overrides, config)
    if problems:
        _stop("; ".join(problems) + ". Nothing was trained.")
    return True


def _label_files(datalist: Sequence[Mapping[str, Any]], key: str) -> dict[tuple[str, Any], list[Any]]:
    groups: dict[tuple[str, Any], list[Any]] = {}
    for item in datalist:
        if key in item:
            groups.setdefault((os.fspath(item[key]), item.get("series_uid")), []).append(item.get("slice"))
    return groups


def check_training_labels(
    train: Sequence[Mapping[str, Any]],
    val: Sequence[Mapping[str, Any]] = (),
    label_threshold: float | None = None,
    key: str = "label",
    axcodes: str = "PLS",
) -> bool:
    """Stop before training when a label is not a binary mask, or when every training (or every validation) label
    is empty: such a run would learn nothing, and a validation Dice of 0 would still become the new ``model.pt``.

    Each label file is read once (the slices the datalist uses, as :func:`pyconv_monai.workflows.load_transforms`
    loads them). The training configs call it in ``run``, before the datasets are built.

    Args:
        train: the training datalist.
        val: the validation datalist.
        label_threshold: ``None``: labels must be binary (``{0, v}``); a number: foreground is
            ``label >= label_threshold`` (only emptiness is checked).
        key: the label key of the items.
        axcodes: the orientation volumes are sliced in (as ``LoadSlice2Dd``).

    Returns:
        ``True`` when the labels are fine.

    Raises:
        TrainingSetupError: in one line (under ``python -m monai.bundle``: on stderr, exit status 2).
    """
    loader = LoadVolume(axcodes=axcodes)
    foreground = {"train": 0, "val": 0}
    bad: list[str] = []
    for name, datalist in (("train", train), ("val", val)):
        for (path, uid), slices in _label_files(datalist, key).items():
            try:
                vol = loader(path, series_uid=uid)
            except (ValueError, FileNotFoundError) as e:
                _stop(f"{e} Nothing was trained.")
            array = np.asarray(vol)[0]
            used = array if any(s is None for s in slices) else array[..., sorted({int(s) for s in slices})]
            values = np.unique(used)
            if label_threshold is None:
                nonzero = values[values != 0]
                if len(nonzero) > 1 and not any(b.startswith(f"{path} (") for b in bad):
                    shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
                    bad.append(f"{path} (values {{{shown}}})")
                foreground[name] += int(np.count_nonzero(used))
            else:
                foreground[name] += int(np.count_nonzero(used >= label_threshold))
    if bad:
        _stop(
            f"{len(bad)} label file(s) are not binary masks, e.g. {bad[0]}; expected {{0, 255}} or {{0, 1}}. "
            "Binarise them, or train with a label threshold (pw.load_transforms(..., label_threshold=127)). "
            "Nothing was trained."
        )
    for name, datalist in (("train", train), ("val", val)):
        if datalist and foreground[name] == 0:
            which = "training" if name == "train" else "validation"
            _stop(
                f"every {which} label is empty ({len(datalist)} item(s), no foreground voxel, e.g. "
                f"{datalist[0].get(key)}): training would learn nothing and its Dice would be 0. Check the label "
                "files (inverted, wrong folder, or saved without their values). Nothing was trained."
            )
    return True
