# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The engine and handlers of the bundles' ``inference.json``: the recipe is the config's, this module runs it.

The recipe lives in the config's standard sections, the ones MONAI Deploy, MONAI Label and MONAI FL read:
``preprocessing`` (load, channel first, modality check, then for volumes orientation, in-plane spacing and the CT
window, for pictures the training scaling), ``inferer`` (MONAI ``SliceInferer``) and ``postprocessing`` (MONAI
``Invertd`` back to the input's grid, sigmoid, threshold, then the mask and DICOM SEG writers). This module adds what
a config cannot say in a line:

- :class:`SegmentationEvaluator`, MONAI's ``SupervisedEvaluator`` over the cases of
  :class:`pyconv_monai.data.CaseDataset`, one case per iteration, where a case that fails (unreadable series, wrong
  modality, an existing output, NaN logits) becomes its row of ``volumes.csv`` and the other cases go on;
- :class:`VolumeTableWriter`, the handler that refuses a folder holding an earlier run's ``volumes.csv``, logs each
  case, writes ``volumes.csv`` and raises :class:`InferenceError` at the end when a case failed;
- :class:`OutputFolderLock`, the handler that, before the network runs, makes sure the output folder is writable and
  not in use by another run, and lets a run interrupted there be completed;
- :class:`RuntimeHandler`, the handler that, once the weights are loaded, hands the network to the CPU runtime
  (:func:`pyconv_monai.runtime.select_runtime`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import apply_transform
from monai.utils import TraceKeys
from pyconv_monai.data import SUPPORTED_FORMATS
from pyconv_monai.data.dataset import error_message
from pyconv_monai.data.formats import GEOMETRY_KINDS
from pyconv_monai.data.meta import tracking_meta
from pyconv_monai.handlers import load_checkpoint
from pyconv_monai.runtime import RUNTIMES, check_finite_logits
from pyconv_monai.runtime import runtime_options as runtime_options_of
from pyconv_monai.runtime import select_runtime
from pyconv_monai.utils import as_bool, atomic_write, output_path, remove_stale_temps
from pyconv_monai.writers import case_outputs, write_csv

__all__ = [
    "CSV_NAME",
    "InferenceError",
    "OutputFolderLock",
    "RuntimeHandler",
    "SegmentationEvaluator",
    "VolumeTableWriter",
    "load_checkpoint",
    "require_cases",
]

logger = logging.getLogger(__name__)

CSV_NAME = "volumes.csv"  # the results table in the output folder


class InferenceError(RuntimeError):
    """Some cases of an inference run failed (the others were written).

    Attributes:
        rows: the per-case results, as written to ``volumes.csv``.
    """

    def __init__(self, message: str, rows: Sequence[Mapping[str, Any]] = ()) -> None:  # noqa: B042
        super().__init__(message)
        self.rows = list(rows)


def require_cases(cases: Sequence[Mapping[str, Any]], dataset_dir: str | os.PathLike) -> list:
    """The cases of a run (the bundles' ``dataset#data``), or a ``ValueError`` when ``dataset_dir`` holds none."""
    if not cases:
        raise ValueError(f"no images found under {os.path.abspath(dataset_dir)}; supported: {SUPPORTED_FORMATS}.")
    return list(cases)


def _ignored(w: warnings.WarningMessage) -> bool:
    """Warnings not worth a line per case: deprecations, and MONAI's note that an optional GPU decoder is absent."""
    return issubclass(w.category, (DeprecationWarning, FutureWarning)) or "nvImageCodec" in str(w.message)


def _spacing_note(image: Any, kind: str) -> str:
    """What the log says of the grid the network saw: the input's in-plane spacing (recorded by
    :class:`pyconv_monai.transforms.InPlaneSpacingd`) and the slice size."""
    size = f"network input {tuple(image.shape[1:3])} per slice"
    ops = image.applied_operations if isinstance(image, MetaTensor) else []
    for op in ops:
        if op.get(TraceKeys.CLASS_NAME) == "InPlaneSpacingd":
            sx, sy = op[TraceKeys.EXTRA_INFO]["orig_spacing"]
            return f"in-plane pixel spacing {sx:.4g} x {sy:.4g} mm; {size}"
    if kind in GEOMETRY_KINDS:
        return size
    return f"a {kind} file carries no pixel spacing: its slices are used as they are; {size}"


class SegmentationEvaluator(SupervisedEvaluator):
    """MONAI ``SupervisedEvaluator`` that segments one case per iteration and keeps one result row per case.

    Per case: the item of ``val_data_loader`` (a :class:`pyconv_monai.data.CaseDataset` with the config's
    ``preprocessing``, loaded with ``collate_fn=monai.data.utils.no_collation``), the ``inferer`` over the volume
    ``(1, C, H, W, N)``, a check that the output is finite, then ``postprocessing`` on ``{**item, "pred": output}``
    (``Invertd``, activation, threshold, writers). ``engine.state.output`` is ``{"row": ..., "pred": mask}``; the
    rows (columns of :data:`pyconv_monai.writers.VOLUME_COLUMNS`) are kept in :attr:`rows`, in case order.

    Args:
        device: where the network runs.
        val_data_loader: the cases, one per batch (see above).
        network: the network (a handler may swap it for a runtime, see :class:`RuntimeHandler`).
        inferer: MONAI inferer (default ``SimpleInferer``).
        postprocessing: the config's ``postprocessing``.
        val_handlers: handlers (weights loading, runtime, the results table, progress).
        amp: mixed precision on CUDA.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Any,
        network: torch.nn.Module,
        inferer: Inferer | None = None,
        postprocessing: Callable | None = None,
        val_handlers: Sequence | None = None,
        amp: bool | str = False,
    ) -> None:
        device = torch.device(device)
        self.case_postprocessing = postprocessing
        self.rows: list[dict] = []
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            network=network,
            inferer=inferer or SimpleInferer(),
            val_handlers=val_handlers,
            amp=as_bool(amp) and device.type == "cuda",
            decollate=False,
        )

    def run(self) -> list[dict]:  # type: ignore[override]
        """Segment every case; returns the rows (see :class:`VolumeTableWriter` for the errors it raises)."""
        self.rows = []
        super().run()
        return self.rows

    def _iteration(self, engine: Engine, batchdata: Any) -> dict:  # type: ignore[override]
        item = batchdata[0] if isinstance(batchdata, (list, tuple)) else batchdata
        row: dict[str, Any] = {
            "case": str(item.get("case", "")),
            "input": item.get("input", ""),
            "kind": item.get("kind", ""),
            "series_uid": item.get("series_uid", ""),
            "status": "error",
            "message": item.get("error", ""),
        }
        self.rows.append(row)
        if "error" in item:
            return {"row": row, "pred": None}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mask = self._segment(engine, item, row)
            for note in (str(w.message) for w in caught if not _ignored(w)):
                logger.warning(f"{row['case']}: {note}")
        except Exception as e:  # one bad case must not stop the others: its row says why
            row["message"] = error_message(e)
            return {"row": row, "pred": None}
        row["status"] = "ok"
        return {"row": row, "pred": mask}

    def _segment(self, engine: Engine, item: dict, row: dict) -> MetaTensor:
        image = item["image"]
        x = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).float()
        x = x[None].to(engine.state.device)
        with tracking_meta(), engine.mode(engine.network), torch.no_grad():
            with torch.autocast(device_type=engine.state.device.type, enabled=engine.amp):
                logits = engine.inferer(x, engine.network)
            logits = check_finite_logits(torch.as_tensor(logits)[0].detach().float().cpu(), str(row["input"]))
            pred = MetaTensor(logits, meta=dict(image.meta))  # the meta holds the affine
            out = dict(item, pred=pred)
            if self.case_postprocessing is not None:
                out = apply_transform(self.case_postprocessing, out)
        mask = out["pred"]
        logger.info(f"{row['case']}: {_spacing_note(image, row['kind'])}")
        self._fill_row(row, mask)
        return mask

    @staticmethod
    def _fill_row(row: dict, mask: Any) -> None:
        meta = mask.meta if isinstance(mask, MetaTensor) else {}
        array = torch.as_tensor(mask)
        row["slices"] = int(array.shape[-1])
        row["foreground_voxels"] = int((array > 0.5).sum())
        if row["kind"] in GEOMETRY_KINDS:
            affine = np.asarray(meta.get("original_affine", getattr(mask, "affine", np.eye(4))), float)
            voxel = float(abs(np.linalg.det(affine[:3, :3])))
            row["voxel_volume_mm3"] = voxel
            row["volume_ml"] = row["foreground_voxels"] * voxel / 1000.0
        if meta.get("saved_to"):
            row["mask"] = os.path.basename(str(meta["saved_to"]))
        notes = [str(meta["geometry_note"])] if meta.get("geometry_note") else []  # an assumed voxel size
        if meta.get("dicom_seg"):
            row["dicom_seg"] = os.path.basename(str(meta["dicom_seg"]))
        if meta.get("dicom_seg_notes"):
            notes.append("DICOM SEG: " + "; ".join(meta["dicom_seg_notes"]))
        row["message"] = "; ".join(notes)


class VolumeTableWriter:
    """The results table of a :class:`SegmentationEvaluator` run, ``<output_dir>/volumes.csv``, and its log.

    At the start it refuses an output folder that holds an earlier run's table (unless ``overwrite``); after each
    case it logs the case's result; at the end it writes the table atomically, logs the summary and raises
    :class:`InferenceError` when a case failed. Attach it first, so that its check runs before the weights are
    loaded.

    Args:
        output_dir: the output folder.
        overwrite: replace an earlier run's outputs.
        dataset_dir: the input folder, for the log.
    """

    def __init__(
        self, output_dir: str | os.PathLike, overwrite: bool | str = False, dataset_dir: str | os.PathLike = ""
    ) -> None:
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        self.overwrite = as_bool(overwrite)
        self.where = f" under {os.path.abspath(os.fspath(dataset_dir))}" if dataset_dir else ""
        self._start = 0.0

    def attach(self, engine: SegmentationEvaluator) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.case_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    @property
    def csv_path(self) -> str:
        return output_path(self.output_dir, CSV_NAME)

    def started(self, engine: SegmentationEvaluator) -> None:
        """Refuse an earlier run's folder; remove stale temporary files; log what the run will do.

        Raises:
            FileExistsError: ``volumes.csv`` exists and ``overwrite`` is False.
        """
        self._start = time.perf_counter()
        if os.path.lexists(self.csv_path) and not self.overwrite:
            raise FileExistsError(
                errno.EEXIST, "the output folder holds the results of an earlier run; pass --overwrite true "
                "(pyconv-monai segment: --overwrite) to replace them, or choose another output folder", self.csv_path
            )  # fmt: skip
        logger.info(f"{engine.state.epoch_length} case(s){self.where}; writing to {self.output_dir}")

    def case_completed(self, engine: SegmentationEvaluator) -> None:
        row = engine.state.output["row"]
        if row["status"] == "ok":
            ml = row.get("volume_ml")
            size = f", {ml:.2f} mL" if ml is not None else ""
            voxels = f"{row['slices']} slice(s), {row['foreground_voxels']} foreground voxel(s){size}"
            logger.info(f"{row['case']}: {voxels}")
        else:
            logger.error(f"case {row['case']} ({row['input']}) failed: {row['message']}")

    def completed(self, engine: SegmentationEvaluator) -> None:
        """Write ``volumes.csv``; raise :class:`InferenceError` when a case failed."""
        rows = engine.rows
        os.makedirs(self.output_dir, exist_ok=True)
        write_csv(rows, self.csv_path, overwrite=self.overwrite)
        failed = [r for r in rows if r["status"] != "ok"]
        seconds = time.perf_counter() - self._start
        done = f"{len(rows) - len(failed)} of {len(rows)} case(s) segmented in {seconds:.1f} s"
        logger.info(f"{done}; see {self.csv_path}")
        if failed:
            listing = "; ".join(f"{r['case']}: {r['message']}" for r in failed[:5])
            more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise InferenceError(
                f"{len(failed)} of {len(rows)} case(s) failed (the others were written; see {self.csv_path}): "
                f"{listing}{more}",
                rows,
            )


class RuntimeHandler:
    """Hand the evaluator's network, with its weights loaded, to a CPU runtime when the run starts.

    Attach it after the weights loader (both run on ``Events.STARTED``, in the order attached). The runtime is chosen
    once (:func:`pyconv_monai.runtime.select_runtime`); the evaluator then runs the network as that runtime does.

    Args:
        runtime: ``"auto"``, ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        runtime_options: more arguments of :func:`pyconv_monai.runtime.select_runtime` (``precision``, ``mode``,
            ``cache_dir``, ``model_file``, ``threads``, ``size``, ``calibration``).
        model_file: default ``model_file`` (an exported ``model.onnx`` used when it was exported from the same
            weights), e.g. beside the checkpoint.
        calibration: default ``calibration`` (the int8 calibration record ``model_int8.json``, used when it was made
            for the same weights), e.g. beside the checkpoint.

    Raises:
        ValueError: an unknown runtime or option.
    """

    def __init__(
        self,
        runtime: str = "auto",
        runtime_options: Mapping[str, Any] | None = None,
        model_file: str | os.PathLike | None = None,
        calibration: str | os.PathLike | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
        self.runtime = runtime
        self.options = runtime_options_of(runtime_options)
        if model_file is not None:
            self.options.setdefault("model_file", os.fspath(model_file))
        if calibration is not None:
            self.options.setdefault("calibration", os.fspath(calibration))
        self._runner: torch.nn.Module | None = None
        self._network: torch.nn.Module | None = None

    def attach(self, engine: SupervisedEvaluator) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: SupervisedEvaluator) -> None:
        if self._runner is None or engine.network is not self._runner:
            self._network = engine.network
            self._network.eval()
            self._runner = select_runtime(self._network, self.runtime, engine.state.device, **self.options)
        engine.network = self._runner


LOCK_NAME = ".pyconv-monai.lock"  # in the output folder while a run writes there


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class OutputFolderLock:
    """Own the output folder for a run: writable, not in use, and an interrupted run's outputs completed, not refused.

    When the run starts (attach it after the weights loader and the runtime, before any case): the folder is created
    and a lock file ``.pyconv-monai.lock`` written in it, holding this process's id and the outputs this run is about
    to write; a folder that cannot be created or written fails the run there, before the network runs, naming the
    folder and the reason. A lock of a live process refuses the run (two runs into one folder would interleave). A
    lock left by a run that died (its process is gone) or failed is taken over: the files it lists (written by that
    run, none existed before it) are removed so their cases are segmented again, and temporary files are removed.
    Files that were in the folder before a run are never listed, so never removed. At the end the lock file is
    removed.

    Args:
        output_dir: the output folder.
        dicom_seg: whether DICOM series get a SEG (the outputs of a case, :func:`pyconv_monai.writers.case_outputs`).

    Raises:
        FileExistsError: (at the start) another live run holds the folder.
        PermissionError, NotADirectoryError, FileExistsError: (at the start) the folder cannot be created or written.
    """

    def __init__(self, output_dir: str | os.PathLike, dicom_seg: bool | str = True) -> None:
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        self.dicom_seg = as_bool(dicom_seg)
        self.path = os.path.join(self.output_dir, LOCK_NAME)
        self._pending: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.case_started)
        engine.add_event_handler(Events.COMPLETED, self.release)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.failed)

    def _save(self, pid: int | None = None) -> None:
        record = {"pid": os.getpid() if pid is None else pid, "outputs": self._pending}
        with atomic_write(self.path, overwrite=True) as tmp:
            with open(tmp, "w") as f:
                json.dump(record, f)

    def started(self, engine: Engine) -> None:
        try:
            os.makedirs(self.output_dir, exist_ok=True)
            if not os.path.isdir(self.output_dir):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", self.output_dir)
        except OSError as e:
            raise type(e)(e.errno, f"cannot use the output folder: {e.strerror}", self.output_dir) from e
        previous = self._read()
        if previous is not None:
            pid = int(previous.get("pid", -1))
            if pid > 0 and pid != os.getpid() and _alive(pid):
                raise FileExistsError(
                    errno.EBUSY, f"the output folder is in use by another run (process {pid}; its lock file is "
                    f"{self.path}); wait for it to finish or choose another output folder", self.output_dir
                )  # fmt: skip
            for name in previous.get("outputs", []):
                target = output_path(self.output_dir, os.path.basename(str(name)))
                if os.path.isfile(target) and not os.path.islink(target):
                    os.remove(target)
                    logger.info(f"removed {target}, written by an interrupted run (process {pid}); segmenting again")
        self._pending = []
        try:
            self._save()
        except OSError as e:
            raise type(e)(e.errno, f"cannot write to the output folder: {e.strerror}", self.output_dir) from e
        for path in remove_stale_temps(self.output_dir):
            logger.info(f"removed {path}, left by an interrupted run")

    def _read(self) -> dict | None:
        if not os.path.lexists(self.path):
            return None
        try:
            with open(self.path) as f:
                record = json.load(f)
            return record if isinstance(record, dict) else {}
        except (OSError, ValueError):
            return {}  # unreadable: treated as a stale lock of nothing

    def case_started(self, engine: Engine) -> None:
        """Record the outputs this case will write that do not exist yet (so an interruption can be completed)."""
        batch = engine.state.batch
        item = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(item, Mapping) or "error" in item or not item.get("case"):
            return
        try:
            names = case_outputs(str(item["case"]), str(item.get("kind", "")), self.dicom_seg)
        except ValueError:
            return
        new = [n for n in names if not os.path.lexists(os.path.join(self.output_dir, n))]
        if new:
            self._pending.extend(new)
            self._save()

    def release(self, engine: Engine) -> None:
        if os.path.lexists(self.path):
            os.remove(self.path)

    def failed(self, engine: Engine, e: BaseException) -> None:
        """An exception ended the run: mark the lock as left by an interrupted run (the next run completes it) and let
        the exception go on. A run that ended with failed cases (:class:`InferenceError`, raised once ``volumes.csv``
        is written) is complete: the folder is released."""
        if isinstance(e, InferenceError):
            self.release(engine)
        elif os.path.lexists(self.path):
            self._save(pid=-1)
        raise e
