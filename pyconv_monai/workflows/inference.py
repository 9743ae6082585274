# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Segment every case under a folder with a 2D network, slice by slice, and write masks that viewers open.

:class:`SegmentationPredictor` is what the bundles' ``inference.json`` runs. Per case (a DICOM series, a NIfTI or
NRRD volume, a TIFF stack or a 2D image, found by :func:`pyconv_monai.data.find_cases`) it

1. reads the image in its stored voxel order with the loader training and evaluation use
   (:class:`pyconv_monai.transforms.LoadVolumed`, the bundles' ``loader``; DICOM series in HU),
2. orients volumes with patient geometry (MONAI ``Orientationd``, as the training loads; the bundles'
   ``orientation``) to the axes the network was trained on (``"PLS"`` for slices in radiological display, ``"ALS"``
   for the vertically flipped LiTS slices; TIFF and 2D files as stored),
3. applies the preprocessing that matches the training data for that kind of input: for CT volumes the in-plane
   resampling to the bundle's ``pixel_spacing`` (:class:`pyconv_monai.transforms.InPlaneSpacingd`) and the CT window;
   TIFF and 2D files carry no spacing and are used as they are (the log says so),
4. runs the network over the slices in batches (MONAI ``SliceInferer``) under ``torch.no_grad``, ``max_slices``
   slices at a time, puts its output back on the input's grid (``invert``: MONAI ``Invertd``), then sigmoid and
   threshold (the bundle's ``postprocessing``),
5. puts the mask back into the input's voxel order and writes it: NIfTI with the input's affine for DICOM, NIfTI and
   NRRD input, plus a DICOM SEG for DICOM series (its source headers read by
   :func:`pyconv_monai.writers.series_headers` in the volume's slice order); TIFF for TIFF; PNG for 2D images,

and records a row of ``volumes.csv`` (slices, foreground voxels, volume in mL). A case that fails (unreadable or
incomplete series, wrong modality, an existing output) is logged with its name and recorded in the CSV; the other
cases go on, and the run raises :class:`InferenceError` at the end.

The weights are loaded once, before the first case, by MONAI's ``CheckpointLoader`` (the bundles'
``checkpointloader``, as ``evaluate.json`` loads them) through :func:`load_checkpoint`.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import CheckpointLoader
from monai.inferers import Inferer, SliceInferer
from monai.transforms import Compose
from monai.utils import optional_import

from pyconv_monai.data import DEFAULT_EXCLUDE, SUPPORTED_FORMATS, find_cases
from pyconv_monai.data.formats import GEOMETRY_KINDS
from pyconv_monai.data.meta import tracking_meta
from pyconv_monai.runtime import RUNTIMES
from pyconv_monai.runtime import runtime_options as runtime_options_of
from pyconv_monai.runtime import select_runtime
from pyconv_monai.transforms import LoadVolumed
from pyconv_monai.transforms.spacing import in_plane_spacing
from pyconv_monai.utils import as_bool, output_path, remove_stale_temps
from pyconv_monai.writers import (
    mask_suffix,
    series_headers,
    write_csv,
    write_dicom_seg,
    write_nifti_mask,
    write_png_mask,
    write_tiff_mask,
)

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["InferenceError", "SegmentationPredictor", "load_checkpoint"]

logger = logging.getLogger(__name__)

CSV_NAME = "volumes.csv"  # the results table in the output folder


class InferenceError(RuntimeError):
    """Some cases of an inference run failed (the others were written).

    Attributes:
        rows: the per-case results, as written to ``volumes.csv``.
    """

    def __init__(self, message: str, rows: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.rows = list(rows)


def load_checkpoint(checkpoint_loader: CheckpointLoader) -> None:
    """Run MONAI's ``CheckpointLoader`` once, outside a training or evaluation run, with errors that say what to do.

    The handler loads a plain state dict (the shipped ``models/model.pt``, the best model the training saves) or a
    checkpoint holding it under the ``load_dict`` key: the bundles' ``checkpointloader`` uses ``"network"``, the key
    of the network in ``train.json``'s epoch checkpoints (``models/checkpoint_epoch=N.pt``), so both load. It runs
    on a minimal ignite ``Engine``, which it needs for its state and logger.

    Args:
        checkpoint_loader: e.g. ``CheckpointLoader(load_path="models/model.pt", load_dict={"network": network})``.

    Raises:
        FileNotFoundError: no file at ``load_path``; the message says how to get or choose weights.
        ValueError: the file is not a readable checkpoint, or its tensors do not fit the network (named).
    """
    path = os.path.abspath(os.fspath(checkpoint_loader.load_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no model weights at {path}. Train the bundle first "
            "(from the bundle folder, python -m monai.bundle run training --config_file configs/train.json writes "
            "models/model.pt there) or pass --ckpt_file /path/to/model.pt (pyconv-monai segment: --ckpt-file)."
        )
    modules = [v for v in checkpoint_loader.load_dict.values() if isinstance(v, torch.nn.Module)]
    what = ", ".join(type(m).__name__ for m in modules) or "objects"
    try:
        checkpoint_loader(Engine(lambda engine, batch: None))
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from e
        detail = str(e).splitlines()
        raise ValueError(
            f"{path} does not fit the network {what} (trained with another --network_name or "
            f"--network_def?): {' '.join(detail[:3])[:600]}"
        ) from e
    except Exception as e:  # unpickling, truncated files, not a checkpoint at all
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from e


def _ignored(w: warnings.WarningMessage) -> bool:
    """Warnings not worth a line per case: deprecations, and MONAI's note that an optional GPU decoder is absent."""
    return issubclass(w.category, (DeprecationWarning, FutureWarning)) or "nvImageCodec" in str(w.message)


def _unwrapped(transform: Callable, data: Any) -> Any:
    """``transform(data)``, raising the error of the failing step rather than MONAI's "applying transform" wrapper."""
    try:
        return transform(data)
    except RuntimeError as e:
        cause: BaseException = e
        while type(cause) is RuntimeError and cause.__cause__ is not None and "applying transform" in str(cause):
            cause = cause.__cause__
        if cause is e:
            raise
        raise cause from e


def _as_transform(t: Callable | Sequence[Callable] | None) -> Callable | None:
    if t is None:
        return None
    if isinstance(t, Sequence):
        return Compose(list(t)) if len(t) else None
    return t


class SegmentationPredictor:
    """Segment every case under a folder with a 2D network and write masks, DICOM SEGs and ``volumes.csv``.

    Args:
        network: the 2D network (logits, one channel), e.g. the bundle's ``network_def``.
        output_dir: the output folder (created); nothing is written outside it.
        checkpoint_loader: MONAI ``CheckpointLoader`` of the weights into ``network`` (the bundles'
            ``checkpointloader``, ``load_path`` ``models/model.pt``), run once before the first case by
            :func:`load_checkpoint`; ``None`` uses the network's weights as they are (for callers that loaded them
            already).
        loader: dictionary transform from ``{"image": path, or the files of a DICOM series, "series_uid": ...}`` to
            ``{"image": (1, X, Y, Z)}``, a MetaTensor in its stored voxel order with its affine (DICOM series: meta
            ``modality``); default: :class:`pyconv_monai.transforms.LoadVolumed` with ``axcodes=None``, the loader of
            training and evaluation (the bundles' ``loader``).
        inferer: runs the network over a ``(1, C, H, W, N)`` volume; default: ``SliceInferer`` over the last axis,
            whole slices, 4 slices at a time.
        preprocessing: dictionary transform of ``{"image": (1, H, W, N)}`` for inputs without patient geometry (TIFF,
            2D images): the training intensity transform.
        ct_preprocessing: the same for volumes with patient geometry (DICOM, NIfTI, NRRD, in HU); ``None`` uses
            ``preprocessing``.
        postprocessing: from the inferer's output ``(C, H, W, N)`` to a binary mask (e.g. sigmoid and threshold);
            ``None`` thresholds logits at 0.
        orientation: dictionary transform of ``{"image": (1, X, Y, Z)}`` (stored voxel order, with its affine) that
            orients volumes with geometry before slicing along the last axis, invertible (MONAI ``Orientationd`` to
            the bundle's ``axcodes``: the bundles' ``orientation``); ``None``: volumes are sliced as stored.
        expected_modality: DICOM series of another Modality (the loaded meta's ``modality``) are refused
            (``None``: any).
        segment: label and codes of the DICOM SEG segment (see :func:`pyconv_monai.writers.segment_description`).
        dicom_seg: write a DICOM SEG for each DICOM series.
        device: where the network runs.
        amp: mixed precision on CUDA.
        overwrite: replace existing outputs (otherwise a case whose outputs exist fails, and a run whose
            ``volumes.csv`` exists does not start).
        progress: progress bars (cases; slices) with ETA.
        exclude: file-name patterns not to segment (see :func:`pyconv_monai.data.find_cases`).
        algorithm: the algorithm's name in the DICOM SEG.
        runtime: what runs the network: ``"auto"`` (on a CPU: OpenVINO, else ONNX Runtime, else torch), ``"torch"``
            (the reference), ``"onnxruntime"`` or ``"openvino"``; a runtime that is not installed falls back to
            torch with one log line (see :func:`pyconv_monai.runtime.select_runtime`).
        invert: dictionary transform that puts the network output ``{"pred": (C, h, w, n)}`` back on the grid of
            the preprocessed image's input (``{"image": ...}``, e.g. MONAI's ``Invertd`` over ``ct_preprocessing``,
            which undoes its in-plane resampling), applied before ``postprocessing``; ``None``: none.
        max_slices: slices preprocessed, inferred and inverted together (memory stays bounded for any volume).
        tta: test-time flip averaging: the mean of the network's logits on each slice, on it flipped top to bottom
            and on it flipped left to right (flipped back); three times the network's time.
        runtime_options: more arguments of :func:`pyconv_monai.runtime.select_runtime` (``precision``, ``mode``,
            ``cache_dir``, ``model_file``, ``threads``, ``size``); ``model_file`` defaults to ``model.onnx`` beside
            the checkpoint, used when it was exported from the same weights.

    Raises:
        ValueError: an unknown ``runtime``, or a ``checkpoint_loader`` that does not load into ``network``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        output_dir: str | os.PathLike,
        checkpoint_loader: CheckpointLoader | None = None,
        loader: Callable | None = None,
        inferer: Inferer | None = None,
        preprocessing: Callable | Sequence[Callable] | None = None,
        ct_preprocessing: Callable | Sequence[Callable] | None = None,
        postprocessing: Callable | Sequence[Callable] | None = None,
        orientation: Callable | None = None,
        expected_modality: str | None = None,
        segment: Mapping[str, Any] | None = None,
        dicom_seg: bool | str = True,
        device: str | torch.device = "cpu",
        amp: bool | str = False,
        overwrite: bool | str = False,
        progress: bool | str = True,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        algorithm: str = "pyconv-monai",
        runtime: str = "auto",
        runtime_options: Mapping[str, Any] | None = None,
        invert: Callable | None = None,
        max_slices: int = 16,
        tta: bool | str = False,
    ) -> None:
        if checkpoint_loader is not None and not any(v is network for v in checkpoint_loader.load_dict.values()):
            raise ValueError(
                "the checkpoint loader must load into the predictor's network (its load_dict holds "
                f"{', '.join(type(v).__name__ for v in checkpoint_loader.load_dict.values())}, not "
                f"this {type(network).__name__})"
            )
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        self.checkpoint_loader = checkpoint_loader
        # the weights file, absolute (for the log and the exported model.onnx beside it)
        self.ckpt_path = None if checkpoint_loader is None else os.path.abspath(os.fspath(checkpoint_loader.load_path))
        self.loader = loader if loader is not None else LoadVolumed("image", axcodes=None)
        self.progress = as_bool(progress) and _has_tqdm
        self.inferer = inferer or SliceInferer(
            roi_size=(-1, -1), sw_batch_size=4, spatial_dim=2, overlap=0.0, progress=self.progress
        )
        self.preprocessing = _as_transform(preprocessing)
        self.ct_preprocessing = _as_transform(ct_preprocessing)
        self.postprocessing = _as_transform(postprocessing)
        self.orientation = orientation
        self.expected_modality = expected_modality or None
        self.segment = dict(segment or {})
        self.dicom_seg = as_bool(dicom_seg)
        self.amp = as_bool(amp)
        self.overwrite = as_bool(overwrite)
        self.exclude = tuple(exclude or ())
        self.algorithm = algorithm
        self._weights_loaded = checkpoint_loader is None
        self.invert = invert
        self.max_slices = max(1, int(max_slices))
        self.tta = as_bool(tta)
        self.runtime = runtime
        self.runtime_options = runtime_options_of(runtime_options)
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
        self._runner: torch.nn.Module | None = None  # the network as the runtime runs it, chosen once per predictor

    def __call__(self, dataset_dir: str | os.PathLike) -> list[dict]:
        return self.run(dataset_dir)

    def find_cases(self, dataset_dir: str | os.PathLike) -> list[dict]:
        """The cases :meth:`run` segments under ``dataset_dir`` (see :func:`pyconv_monai.data.find_cases`), without
        this predictor's output folder and excluded names; the bundles' ``dataset`` holds them."""
        return find_cases(dataset_dir, exclude=self.exclude, skip_dirs=[self.output_dir])

    def run(self, dataset_dir: str | os.PathLike, cases: Sequence[Mapping[str, Any]] | None = None) -> list[dict]:
        """Segment every case under ``dataset_dir`` (a folder or one file) and write the outputs and ``volumes.csv``.

        Args:
            dataset_dir: the input folder or file.
            cases: the cases to segment, as :meth:`find_cases` lists them (the bundle's ``dataset``); ``None``
                finds them under ``dataset_dir``.

        Returns:
            one dict per case (the CSV's rows, see :data:`pyconv_monai.writers.VOLUME_COLUMNS`).

        Raises:
            FileNotFoundError: the input or the weights do not exist.
            FileExistsError: ``volumes.csv`` exists in the output folder and ``overwrite`` is False.
            ValueError: no image under ``dataset_dir``, or weights that do not fit the network.
            InferenceError: after all cases ran and the CSV was written, when a case failed (its ``rows`` are the
                CSV's).
        """
        start = time.perf_counter()
        if not os.path.exists(dataset_dir):
            raise FileNotFoundError(f"input not found: {os.path.abspath(dataset_dir)}")
        csv_path = output_path(self.output_dir, CSV_NAME)
        if os.path.lexists(csv_path) and not self.overwrite:
            raise FileExistsError(
                errno.EEXIST, "the output folder holds the results of an earlier run; pass --overwrite true "
                "(pyconv-monai segment: --overwrite) to replace them, or choose another output folder", csv_path
            )  # fmt: skip
        if not self._weights_loaded:
            load_checkpoint(self.checkpoint_loader)
            self._weights_loaded = True
            logger.info(f"loaded weights from {self.ckpt_path}")
        self.network.eval()
        if self._runner is None:
            options = dict(self.runtime_options)
            if self.ckpt_path is not None and "model_file" not in options:
                options["model_file"] = os.path.join(os.path.dirname(self.ckpt_path), "model.onnx")
            self._runner = select_runtime(self.network, self.runtime, self.device, **options)
        os.makedirs(self.output_dir, exist_ok=True)
        for path in remove_stale_temps(self.output_dir):
            logger.info(f"removed {path}, left by an interrupted run")
        cases = self.find_cases(dataset_dir) if cases is None else list(cases)
        if not cases:
            raise ValueError(f"no images found under {os.path.abspath(dataset_dir)}; supported: {SUPPORTED_FORMATS}.")
        logger.info(f"{len(cases)} case(s) under {os.path.abspath(dataset_dir)}; writing to {self.output_dir}")
        bar = tqdm(cases, desc="cases", unit="case", disable=not self.progress) if self.progress else cases
        rows = [self.predict_case(case) for case in bar]
        write_csv(rows, csv_path, overwrite=self.overwrite)
        failed = [r for r in rows if r["status"] != "ok"]
        seconds = time.perf_counter() - start
        logger.info(f"{len(rows) - len(failed)} of {len(rows)} case(s) segmented in {seconds:.1f} s; see {csv_path}")
        if failed:
            listing = "; ".join(f"{r['case']}: {r['message']}" for r in failed[:5])
            more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise InferenceError(
                f"{len(failed)} of {len(rows)} case(s) failed (the others were written; see {csv_path}): "
                f"{listing}{more}",
                rows,
            )
        return rows

    def predict_case(self, case: Mapping[str, Any]) -> dict:
        """Segment one case of :func:`pyconv_monai.data.find_cases` and write its outputs; never raises.

        Returns:
            its row of ``volumes.csv``: ``status`` is ``"ok"`` or ``"error"`` with the reason in ``message``.
        """
        name = str(case["case"])
        row: dict[str, Any] = {
            "case": name,
            "input": case["image"],
            "kind": case["kind"],
            "series_uid": case.get("series_uid", ""),
            "status": "error",
            "message": "",
        }
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._predict(case, row)
            notes = [str(w.message) for w in caught if not _ignored(w)]
            for note in notes:
                logger.warning(f"{name}: {note}")
            row["status"] = "ok"
            fg, ml = row.get("foreground_voxels"), row.get("volume_ml")
            size = f", {ml:.2f} mL" if ml is not None else ""
            logger.info(f"{name}: {row['slices']} slice(s), {fg} foreground voxel(s){size}")
        except Exception as e:  # one bad case must not stop the others: log, record, go on
            known = (ValueError, FileNotFoundError, FileExistsError, PermissionError)
            message = str(e) if isinstance(e, known) else f"{type(e).__name__}: {e}"
            row["message"] = " ".join(message.split())
            logger.error(f"case {name} ({case['image']}) failed: {row['message']}")
        return row

    def _outputs(self, name: str, kind: str) -> tuple[str, str | None]:
        mask = output_path(self.output_dir, f"{name}_seg{mask_suffix(kind)}")
        seg = output_path(self.output_dir, f"{name}_seg.dcm") if kind == "dicom_series" and self.dicom_seg else None
        for path in (mask, seg):
            if path is not None and os.path.lexists(path) and not self.overwrite:
                raise FileExistsError(
                    f"{path} exists; pass --overwrite true (pyconv-monai segment: --overwrite) to replace it"
                )
        return mask, seg

    def _load(self, case: Mapping[str, Any]) -> MetaTensor:
        """The image ``(1, X, Y, Z)`` in its stored voxel order, read by ``loader``; DICOM series of another modality
        than ``expected_modality`` are refused."""
        dicom = case["kind"] == "dicom_series"
        item = {"image": list(case["files"]) if dicom and case.get("files") else case["image"]}
        item["series_uid"] = case.get("series_uid") or None
        with tracking_meta():
            vol = _unwrapped(self.loader, item)["image"]
        if not isinstance(vol, MetaTensor):
            raise ValueError(f"{case['image']}: the loader returned a {type(vol).__name__}, not a MetaTensor")
        modality = str(vol.meta.get("modality", "") or "") if dicom else ""
        if dicom and self.expected_modality and modality.upper() != self.expected_modality.upper():
            raise ValueError(
                f"modality {modality or 'unknown'!r}: this bundle segments {self.expected_modality} images; "
                "the series was not processed"
            )
        return vol

    def _infer(self, image: torch.Tensor) -> torch.Tensor:
        """The network's output ``(C, H, W, N)`` (logits) for a preprocessed ``(1, H, W, N)`` image, on the CPU."""
        x = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).float()
        x = x[None].to(self.device)
        use_amp = self.amp and self.device.type == "cuda"
        net = self._runner if self._runner is not None else self.network
        with torch.no_grad(), torch.autocast(device_type=self.device.type, enabled=use_amp):
            logits = self.inferer(x, net)
            if self.tta:  # (B, C, H, W, N): flip rows, then columns, and back
                logits = logits.float()
                for dim in (2, 3):
                    logits = logits + torch.flip(self.inferer(torch.flip(x, dims=(dim,)), net), dims=(dim,)).float()
                logits = logits / 3.0
        out = logits[0]
        return (out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)).detach().float().cpu()

    def _segment(self, array: np.ndarray, affine: np.ndarray, source: str, ct: bool) -> tuple[np.ndarray, str]:
        """Binary mask ``(H, W, N)`` of an (oriented) image ``(H, W, N)`` whose voxel-to-world affine is ``affine``.

        At most ``max_slices`` slices at a time: preprocessing (for ``ct``: ``ct_preprocessing``, which may resample
        the slices to the bundle's pixel spacing), the network, ``invert`` (back to the input's grid, ``ct`` only),
        ``postprocessing``. Returns the mask and a note on the grid the network saw.
        """
        transform = self.ct_preprocessing if ct and self.ct_preprocessing is not None else self.preprocessing
        invert = self.invert if ct and self.ct_preprocessing is not None else None
        n = array.shape[-1]
        mask = np.zeros(array.shape, bool)
        note = ""
        for start in range(0, n, self.max_slices):
            stop = min(n, start + self.max_slices)
            shift = np.eye(4)
            shift[2, 3] = start
            with tracking_meta():
                chunk = MetaTensor(
                    torch.as_tensor(np.ascontiguousarray(array[..., start:stop]))[None],
                    affine=torch.as_tensor(affine @ shift),
                    meta={"filename_or_obj": source},
                )
                data: dict[str, Any] = {"image": chunk}
                if transform is not None:
                    data = dict(_unwrapped(transform, data))
                image = data["image"]
                if not note:
                    note = f"network input {tuple(image.shape[1:3])} per slice"
                logits = self._infer(image)
                if invert is not None:
                    data["pred"] = MetaTensor(logits, affine=image.affine if isinstance(image, MetaTensor) else None)
                    logits = _unwrapped(invert, data)["pred"]
            out = self.postprocessing(logits) if self.postprocessing is not None else logits > 0
            out = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
            part = out[0].detach().float().cpu().numpy() > 0.5
            if part.shape != array[..., start:stop].shape:
                raise ValueError(
                    f"{source}: the prediction {part.shape} is not on the input grid {array[..., start:stop].shape}; "
                    "the inference config's invert step must undo every spatial step of its preprocessing"
                )
            mask[..., start:stop] = part
        return mask, note

    def _predict(self, case: Mapping[str, Any], row: dict) -> None:
        name, kind = str(case["case"]), case["kind"]
        mask_path, seg_path = self._outputs(name, kind)
        vol = self._load(case)
        affine = np.asarray(vol.affine, float)
        # the DICOM SEG's source headers, in the volume's slice order, before anything is written
        headers = series_headers(case["files"], affine) if seg_path is not None else None
        geometry = kind in GEOMETRY_KINDS
        reorient = self.orientation if geometry else None
        with tracking_meta():  # MONAI's Orientation, as the training loads
            oriented_vol = _unwrapped(reorient, {"image": vol})["image"] if reorient is not None else vol
        array = oriented_vol.as_tensor()[0].numpy()
        oriented = np.asarray(oriented_vol.affine, float)
        source = str(case["image"])
        mask, note = self._segment(array, oriented, source, ct=geometry)
        if geometry:
            sx, sy = in_plane_spacing(oriented)
            logger.info(f"{name}: in-plane pixel spacing {sx:.4g} x {sy:.4g} mm; {note}")
        else:
            logger.info(f"{name}: a {kind} file carries no pixel spacing: its slices are used as they are; {note}")
        row["slices"] = int(mask.shape[-1])
        if reorient is not None:  # back to the stored voxel order (MONAI's inverse of the same Orientation)
            with tracking_meta():
                oriented_mask = MetaTensor(torch.as_tensor(mask)[None], affine=oriented_vol.affine)
                oriented_mask.applied_operations = list(oriented_vol.applied_operations)
                restored = _unwrapped(reorient.inverse, {"image": oriented_mask})["image"]
            same_grid = np.allclose(np.asarray(restored.affine, float), affine, atol=1e-4)
            if restored.shape[1:] != vol.shape[1:] or not same_grid:
                raise ValueError(f"{case['image']}: the orientation step did not invert to the input's grid")
            mask = restored.as_tensor()[0].numpy()
        mask = np.ascontiguousarray(mask)
        foreground = int(mask.sum())
        row["foreground_voxels"] = foreground
        if geometry:
            voxel = float(abs(np.linalg.det(affine[:3, :3])))
            row["voxel_volume_mm3"] = voxel
            row["volume_ml"] = foreground * voxel / 1000.0
            write_nifti_mask(mask, affine, mask_path, overwrite=self.overwrite)
        elif kind == "tiff":
            write_tiff_mask(mask if mask.shape[-1] > 1 else mask[..., 0], mask_path, overwrite=self.overwrite)
        else:
            write_png_mask(mask[..., 0], mask_path, overwrite=self.overwrite)
        row["mask"] = os.path.basename(mask_path)
        if seg_path is not None and headers is not None:
            frames = mask.transpose(2, 1, 0)  # (columns, rows, slices) -> (slices, rows, columns), headers' order
            try:
                notes = write_dicom_seg(
                    frames, headers, seg_path, self.segment, overwrite=self.overwrite, algorithm=self.algorithm
                )
            except Exception as e:
                raise ValueError(f"the mask {row['mask']} was written, the DICOM SEG was not: {e}") from e
            row["dicom_seg"] = os.path.basename(seg_path)
            if notes:
                row["message"] = "DICOM SEG: " + "; ".join(notes)
