# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""CPU inference runtimes: fused inference form of PyConvU-Net, ONNX export, ONNX Runtime and OpenVINO wrappers."""

from pyconv_monai.runtime.backends import (
    ONNX_CACHE_ENV,
    PRECISIONS,
    RUNTIMES,
    OnnxRuntimeNetwork,
    OpenVINONetwork,
    available_runtimes,
    export_onnx,
    network_digest,
    onnx_digest,
    runtime_options,
    select_runtime,
)
from pyconv_monai.runtime.fuse import FUSE_MODES, FusedPyConvNormAct, fuse_for_inference

__all__ = [
    "FUSE_MODES",
    "FusedPyConvNormAct",
    "fuse_for_inference",
    "ONNX_CACHE_ENV",
    "PRECISIONS",
    "RUNTIMES",
    "OnnxRuntimeNetwork",
    "OpenVINONetwork",
    "available_runtimes",
    "export_onnx",
    "network_digest",
    "onnx_digest",
    "runtime_options",
    "select_runtime",
]
