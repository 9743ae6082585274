# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""int8 post-training quantisation for the CPU runtimes, with ONNX Runtime's quantisation tools.

The activation ranges of an exported network are measured once, on training slices (:func:`collect_ranges`, ONNX
Runtime's percentile calibrator), and kept in a small JSON record beside the weights (``models/model_int8.json``,
:func:`write_calibration`). From that record :func:`quantize_qdq` turns the fp32 export of any slice size into a QDQ
model (int8 weights per output channel, uint8 activations): ONNX Runtime and OpenVINO both run it with int8 kernels.
The record names what it is valid for (the weights' and export settings' key, checked by
:func:`pyconv_monai.runtime.select_runtime`) and carries a SHA-256 of its ranges, so an edited record is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pyconv_monai.utils.files import atomic_write

__all__ = [
    "CALIBRATION_FORMAT",
    "CalibrationError",
    "PERCENTILE",
    "collect_ranges",
    "quantize_qdq",
    "ranges_sha256",
    "read_calibration",
    "seal_calibration",
    "write_calibration",
]

CALIBRATION_FORMAT = 1  # the layout of a calibration record (models/model_int8.json)
# each activation's range: from its 0.0005th to its 99.9995th percentile over the calibration slices (asymmetric, as
# uint8 activations are). Measured on the liver bundle (8 training slices; 20 slices of the real DICOM series,
# OpenVINO int8): the foreground changed by +0.005 % against fp32; symmetric percentile ranges (ONNX Runtime's
# default) by +0.20 %, min-max ranges (outliers included, coarser steps) by -0.31 %; the same speed
PERCENTILE = 99.999
_REQUIRED = ("format", "key", "mode", "ranges", "ranges_sha256")


class CalibrationError(ValueError):
    """A calibration record that is missing, unreadable, edited, or made for other weights or settings."""


def _quantized_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))  # what quantize_static quantises by default


def collect_ranges(model: bytes, batches: Iterable[np.ndarray], input_name: str = "image") -> dict[str, list]:
    """Activation ranges of every tensor that int8 quantisation needs, over ``batches``: the :data:`PERCENTILE`
    range of each tensor's values (ONNX Runtime's histogram calibrator).

    Args:
        model: an fp32 ONNX model (e.g. :func:`pyconv_monai.runtime.export_onnx` bytes).
        batches: input arrays ``(B, C, H, W)``, float32, as the network sees them at inference (preprocessed).
        input_name: the model's input.

    Returns:
        ``{tensor name: [[min], [max]]}`` (JSON-ready).

    Raises:
        ValueError: ``batches`` is empty.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    class _One(CalibrationDataReader):
        def __init__(self, x: np.ndarray) -> None:
            self.items = [{input_name: x}]

        def get_next(self) -> dict | None:
            return self.items.pop() if self.items else None

    with tempfile.TemporaryDirectory(prefix="pyconv-monai-calib-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model)
        calibrator = create_calibrator(
            path,
            _quantized_op_types(),
            str(Path(tmp) / "augmented.onnx"),
            CalibrationMethod.Percentile,
            extra_options={"percentile": PERCENTILE, "symmetric": False},
        )
        count = 0
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints a few lines per call
            for x in batches:  # one batch per call: each adds to the histograms and frees the batch's activations
                calibrator.collect_data(_One(np.ascontiguousarray(x, dtype=np.float32)))
                count += 1
            if count == 0:
                raise ValueError("no calibration slices were given.")
            data = calibrator.compute_data()
        del calibrator
    return {
        name: [np.asarray(t.range_value[0], np.float32).ravel().tolist(),
               np.asarray(t.range_value[1], np.float32).ravel().tolist()]
        for name, t in sorted(data.data.items())
    }  # fmt: skip


def ranges_sha256(ranges: Mapping[str, Any]) -> str:
    """SHA-256 of the ranges in canonical JSON (sorted keys): what a record's ``ranges_sha256`` must be."""
    return hashlib.sha256(json.dumps(ranges, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def quantize_qdq(model: bytes, ranges: Mapping[str, Any]) -> bytes:
    """The int8 QDQ form of an fp32 ONNX model from measured activation ranges (no calibration data needed).

    Weights become int8 per output channel, activations uint8 with the recorded ranges (ONNX Runtime's
    ``QDQQuantizer``, the settings of ``quantize_static(per_channel=True)``).

    Args:
        model: the fp32 ONNX bytes (any slice size of the export the ranges were measured on).
        ranges: ``{tensor name: [[min], [max]]}`` from :func:`collect_ranges`.

    Returns:
        the quantised model's bytes.

    Raises:
        CalibrationError: a tensor the quantiser needs has no recorded range (another export than the calibrated
            one).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QDQQuantizer, QuantType, TensorData, TensorsData
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    graph = onnx.shape_inference.infer_shapes(onnx.load_from_string(model)).graph
    floats = {v.name for v in (*graph.input, *graph.value_info, *graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}  # fmt: skip
    ops = set(_quantized_op_types())
    needed = {t for n in graph.node if n.op_type in ops for t in (*n.input, *n.output) if t in floats}
    missing = sorted(needed - set(ranges))
    if missing:
        raise CalibrationError(f"no calibrated range for {len(missing)} tensor(s) of this export (e.g. {missing[0]})")
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {name: TensorData(lowest=np.asarray(lo, np.float32), highest=np.asarray(hi, np.float32))
         for name, (lo, hi) in ranges.items()},
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pyconv-monai-int8-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model)
        quantizer = QDQQuantizer(
            load_model_with_shape_infer(path),
            True,  # per_channel
            False,  # reduce_range
            QuantType.QInt8,
            QuantType.QUInt8,
            tensors,
            [],
            [],
            _quantized_op_types(),
            {},
        )
        quantizer.quantize_model()
        return quantizer.model.model.SerializeToString()


def read_calibration(path: str | os.PathLike) -> dict[str, Any]:
    """A calibration record, checked for its layout and its ranges' SHA-256.

    Args:
        path: the JSON record (e.g. ``models/model_int8.json``).

    Returns:
        the record (``format``, ``key``, ``mode``, ``ranges``, ``ranges_sha256`` and what the calibration measured).

    Raises:
        CalibrationError: the file is missing or unreadable, has another layout, or its ranges were changed.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no int8 calibration (make one with `pyconv-monai quantize`)") from None
    except (OSError, ValueError) as e:
        raise CalibrationError(f"{path}: not a readable calibration record ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict) or any(k not in record for k in _REQUIRED):
        raise CalibrationError(f"{path}: not a calibration record (needs {', '.join(_REQUIRED)})")
    if record["format"] != CALIBRATION_FORMAT:
        raise CalibrationError(f"{path}: calibration format {record['format']!r}, this version reads "
                               f"{CALIBRATION_FORMAT}")  # fmt: skip
    if ranges_sha256(record["ranges"]) != record["ranges_sha256"]:
        raise CalibrationError(f"{path}: the ranges' SHA-256 differs from the recorded one (the file was edited)")
    return record


def seal_calibration(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its ``format`` and ``ranges_sha256`` set: what :func:`write_calibration` writes and
    :func:`read_calibration` returns."""
    return {**record, "format": CALIBRATION_FORMAT, "ranges_sha256": ranges_sha256(record["ranges"])}


def write_calibration(path: str | os.PathLike, record: Mapping[str, Any], overwrite: bool = False) -> str:
    """Write a calibration record atomically (its ``ranges_sha256`` and ``format`` are set here).

    Args:
        path: the JSON file to write.
        record: at least ``key``, ``mode`` and ``ranges``.
        overwrite: replace an existing file.

    Returns:
        ``path`` as a string.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    record = seal_calibration(record)
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write("\n")
    return os.fspath(path)
