# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""CPU inference runtimes: fused inference form of PyConvU-Net, ONNX export, ONNX Runtime and OpenVINO wrappers, the
SHA-256-verified model cache, int8 quantisation from calibration records and the NaN/Inf checks."""

from pyconv_monai.runtime.backends import (
    DEFAULT_PRECISION,
    PRECISIONS,
    RUNTIMES,
    OnnxRuntimeNetwork,
    OpenVINONetwork,
    available_runtimes,
    calibrate_network,
    calibration_key,
    export_onnx,
    int8_runs_here,
    network_digest,
    onnx_digest,
    onnxruntime_has_int8,
    openvino_has_bf16,
    runtime_options,
    select_runtime,
    weights_sha256,
)
from pyconv_monai.runtime.cache import ONNX_CACHE_ENV, default_cache_dir, read_verified, write_verified
from pyconv_monai.runtime.checks import NonFiniteError, check_finite_logits, check_finite_weights
from pyconv_monai.runtime.fuse import FUSE_MODES, WIDTH_RULE, FusedPyConvNormAct, fuse_for_inference, width_plan_mode
from pyconv_monai.runtime.quantize import CalibrationError, quantize_qdq, read_calibration, write_calibration

__all__ = [
    "DEFAULT_PRECISION",
    "FUSE_MODES",
    "FusedPyConvNormAct",
    "fuse_for_inference",
    "WIDTH_RULE",
    "width_plan_mode",
    "NonFiniteError",
    "ONNX_CACHE_ENV",
    "PRECISIONS",
    "RUNTIMES",
    "OnnxRuntimeNetwork",
    "OpenVINONetwork",
    "available_runtimes",
    "CalibrationError",
    "calibrate_network",
    "calibration_key",
    "check_finite_logits",
    "check_finite_weights",
    "default_cache_dir",
    "export_onnx",
    "int8_runs_here",
    "network_digest",
    "onnx_digest",
    "onnxruntime_has_int8",
    "openvino_has_bf16",
    "quantize_qdq",
    "read_calibration",
    "read_verified",
    "runtime_options",
    "select_runtime",
    "weights_sha256",
    "write_calibration",
    "write_verified",
]
