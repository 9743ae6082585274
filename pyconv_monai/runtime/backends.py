# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Run a trained 2D network on the CPU with ONNX Runtime or OpenVINO; PyTorch stays the reference and the fallback.

:func:`select_runtime` turns the bundle's network (weights loaded, evaluation mode) into a ``torch.nn.Module`` that
MONAI's ``SliceInferer`` calls like the network itself:

* ``"torch"``: the network as it is (the reference);
* ``"onnxruntime"`` / ``"openvino"``: an :class:`OnnxRuntimeNetwork` / :class:`OpenVINONetwork` over the network's
  ONNX form (:func:`pyconv_monai.runtime.export_onnx`: PyConvs fused into plain convolutions with batch norm
  folded, opset 18);
* ``"auto"`` (default): on a CPU, OpenVINO if it is installed, else ONNX Runtime, else torch; on a GPU, torch.

The ONNX model comes from, in this order: ``model_file`` (e.g. ``models/model.onnx`` beside the weights) when its
sidecar ``model.onnx.sha256`` names the network's digest (the SHA-256 of its weights and export settings,
:func:`network_digest`) and records the SHA-256 the file's bytes really have; ``<cache>/onnx/<digest>.onnx`` under
the same check, written there on first use; otherwise an export in memory (seconds). The cache folder is
``cache_dir``, else the per-user :func:`pyconv_monai.runtime.cache.default_cache_dir` (``~/.cache/pyconv-monai``;
``$PYCONV_MONAI_ONNX_CACHE`` moves it, ``"off"`` switches it off). OpenVINO also keeps its compiled model there
(``<cache>/openvino/<sha256>.blob``, keyed by the SHA-256 of the ONNX bytes, the settings and OpenVINO's version,
checked the same way), so a second run neither exports nor compiles. A file that fails its check is never used: a
cached one is rebuilt, a ``model_file`` is left as it is (exported anew into the cache). A bundle folder is never
written at inference.

Weights with NaN or Inf are refused (:func:`pyconv_monai.runtime.checks.check_finite_weights`), whatever the runtime.

int8 (``precision="int8"``, or ``"auto"`` when a calibration record for these weights is given): the fp32 export
quantised with the activation ranges of a calibration record (``models/model_int8.json``, written by
``pyconv-monai quantize`` after checking the bundle's validation Dice; :mod:`pyconv_monai.runtime.quantize`),
cached like the fp32 export; ONNX Runtime and OpenVINO (the rest of the graph in fp32) run it with int8 kernels.
ONNX Runtime's int8 is refused on x86 CPUs without VNNI (:func:`onnxruntime_has_int8`): there its products saturate
and the masks are wrong (measured: lung validation Dice 0.906 against 0.980 in fp32).

A runtime that is not installed, or a network that cannot be exported, falls back to torch with one log line.
Slices of another size than the first get their own export on first use (in memory or in the cache folder, up to 8
sizes); a tensor that needs gradients, a GPU tensor, or a size that does not export runs through the torch network.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import platform
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from pyconv_monai.runtime.cache import ONNX_CACHE_ENV, read_verified, resolve_cache_dir, write_verified
from pyconv_monai.runtime.checks import check_finite_weights
from pyconv_monai.runtime.fuse import FUSE_MODES, fuse_for_inference
from pyconv_monai.runtime.quantize import (
    PERCENTILE,
    CalibrationError,
    collect_ranges,
    quantize_qdq,
    read_calibration,
    seal_calibration,
)

__all__ = [
    "RUNTIMES",
    "PRECISIONS",
    "ONNX_CACHE_ENV",
    "OnnxRuntimeNetwork",
    "OpenVINONetwork",
    "available_runtimes",
    "calibrate_network",
    "calibration_key",
    "cpu_flags",
    "export_onnx",
    "network_digest",
    "onnx_digest",
    "int8_runs_here",
    "onnxruntime_has_int8",
    "openvino_has_bf16",
    "runtime_options",
    "select_runtime",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino")
# fp32: exact up to float rounding; bf16: OpenVINO computes in bfloat16 (lossy: allowed because every bundle's
# validation Dice changes by <= 0.002 against fp32, docs/performance.md); int8: the QDQ model of a calibration record
# (lossy: `pyconv-monai quantize` writes a record only when the bundle's validation Dice changes by <= 0.002); auto:
# int8 where a calibration record for these weights is given (ONNX Runtime's only on a CPU where its int8 does not
# saturate, onnxruntime_has_int8), else bf16 on OpenVINO where the CPU has bfloat16 units
# (OpenVINO's OPTIMIZATION_CAPABILITIES lists BF16: AVX512_BF16 or AMX), else fp32 (ONNX Runtime's CPU provider has no
# bfloat16 convolutions)
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
DEFAULT_PRECISION = "auto"
DIGEST_KEY = "pyconv_monai.digest"
OPSET = 18
# the fusion of every export (select_runtime's mode "auto"): the per-unit "width" plan (dense at 16 channels, one
# convolution per level at 32-64, the grouped levels above), measured fastest of the fusions on OpenVINO fp32 and
# bf16 and on ONNX Runtime (docs/performance.md: benchmarks/runtime_profile.py --units, cpu_inference.py --modes)
DEFAULT_FUSE_MODE = "width"


def _importable(module: str) -> bool:
    """Whether ``module`` imports here (it is imported: call only for a runtime about to be used)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def available_runtimes() -> list[str]:
    """The runtimes that can be imported here, ``"torch"`` first (imports each of them)."""
    return ["torch"] + [name for name in ("onnxruntime", "openvino") if _importable(name)]


def weights_sha256(network: nn.Module) -> str:
    """SHA-256 of the network's state dict: every entry's name, shape, dtype and bytes, in order."""
    h = hashlib.sha256()
    for name, t in network.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def network_digest(network: nn.Module, mode: str = DEFAULT_FUSE_MODE, size: tuple[int, ...] = (512, 512)) -> str:
    """SHA-256 of what an exported model depends on: the weights (:func:`weights_sha256`), the architecture, the
    fusion, the size and the opset: the key of the model cache.

    Args:
        network: the network with its trained weights.
        mode: the PyConv fusion (see :data:`pyconv_monai.runtime.FUSE_MODES`).
        size: the spatial size of the exported input.

    Returns:
        a hex digest; equal digests mean the same exported model.
    """
    text = f"{weights_sha256(network)}\n{type(network).__qualname__}\n{network!r}\n{mode}\n{tuple(size)}\n{OPSET}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def calibration_key(network: nn.Module, mode: str = DEFAULT_FUSE_MODE) -> str:
    """What a calibration record is valid for: the weights (:func:`weights_sha256`), the architecture, the fusion and
    the opset (not the slice size: the ranges serve every size of the same export).

    Args:
        network: the network with its trained weights.
        mode: the PyConv fusion of the calibrated export.

    Returns:
        a hex digest, the record's ``key``.
    """
    text = f"{weights_sha256(network)}\n{type(network).__qualname__}\n{network!r}\n{mode}\n{OPSET}\nint8-qdq\n"
    return hashlib.sha256(text.encode()).hexdigest()


def calibrate_network(
    network: nn.Module, slices: Iterable[torch.Tensor | np.ndarray], mode: str = "auto"
) -> dict[str, Any]:
    """Measure the activation ranges of the network's ONNX export on preprocessed slices: a calibration record.

    Args:
        network: the network with its trained weights (evaluation mode).
        slices: preprocessed inputs ``(C, H, W)`` or ``(B, C, H, W)``, e.g. training slices through the validation
            transforms; slices of several sizes are calibrated on their own exports and merged.
        mode: the PyConv fusion (``"auto"``: :data:`DEFAULT_FUSE_MODE`).

    Returns:
        ``{"key", "mode", "method", "slices", "onnxruntime", "ranges"}`` for
        :func:`pyconv_monai.runtime.quantize.write_calibration`.
    """
    import onnxruntime

    mode = DEFAULT_FUSE_MODE if mode == "auto" else mode
    check_finite_weights(network)
    network.eval()
    by_size: dict[tuple[int, ...], list[np.ndarray]] = {}
    for x in slices:
        x = np.asarray(x.detach().cpu().float() if isinstance(x, torch.Tensor) else x, np.float32)
        x = x[None] if x.ndim == 3 else x
        by_size.setdefault(tuple(x.shape[2:]), []).append(x)
    ranges: dict[str, list] = {}
    for size, batches in by_size.items():
        for name, (lo, hi) in collect_ranges(export_onnx(network, None, mode, size), batches).items():
            old = ranges.get(name)
            ranges[name] = (
                [lo, hi] if old is None else [np.minimum(old[0], lo).tolist(), np.maximum(old[1], hi).tolist()]
            )
    return {
        "key": calibration_key(network, mode),
        "mode": mode,
        "method": f"percentile {PERCENTILE}, asymmetric",
        "slices": sum(len(b) for batches in by_size.values() for b in batches),
        "onnxruntime": onnxruntime.__version__,
        "ranges": dict(sorted(ranges.items())),
    }


def onnx_digest(path: str | os.PathLike) -> str | None:
    """The network digest recorded in an exported ONNX file's metadata (``None`` when there is none or it cannot be
    read). Informative only: a file is trusted by its sidecar's SHA-256 (:mod:`pyconv_monai.runtime.cache`)."""
    try:
        import onnx

        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:
        return None
    return next((p.value for p in model.metadata_props if p.key == DIGEST_KEY), None)


def export_onnx(
    network: nn.Module,
    path: str | os.PathLike | None = None,
    mode: str = DEFAULT_FUSE_MODE,
    size: tuple[int, ...] = (512, 512),
    in_channels: int | None = None,
    overwrite: bool = False,
) -> bytes | str:
    """Export a trained network to ONNX (opset 18) for the CPU runtimes, its PyConvs fused and batch norm folded.

    The batch axis is dynamic; the spatial size is fixed to ``size`` (the runtime wrappers export other sizes when
    they come).
    A written file gets a sidecar ``<path>.sha256`` with the network's digest (:func:`network_digest`) and the
    file's own SHA-256: :func:`select_runtime` uses the file only while both still match.

    Args:
        network: the network with its trained weights (not changed).
        path: where to write the ``.onnx`` file and its sidecar (atomically: temporary files in the same folder, then
            renamed); ``None`` returns the model's bytes instead.
        mode: how PyConvs become plain convolutions, one of :data:`pyconv_monai.runtime.FUSE_MODES` (networks without
            PyConvs are exported as they are).
        size: spatial size of the exported input, e.g. ``(512, 512)``.
        in_channels: input channels (default: the network's ``in_channels`` attribute, else 1).
        overwrite: replace an existing file.

    Returns:
        ``path`` as a string, or the model's bytes.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    import onnx

    if path is not None and os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{os.fspath(path)} exists; pass overwrite=True to replace it.")
    digest = network_digest(network, mode, size)
    fused = fuse_for_inference(network, mode).cpu().float()
    channels = in_channels or int(getattr(network, "in_channels", 1) or 1)
    example = torch.zeros(1, channels, *size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape checks: the spatial size is fixed on purpose
        torch.onnx.export(
            fused,
            (example,),
            buffer,
            opset_version=OPSET,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in ((DIGEST_KEY, digest), ("pyconv_monai.fuse_mode", mode), ("pyconv_monai.size", str(size))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data = model.SerializeToString()
    if path is None:
        return data
    return write_verified(path, data, digest)


class _RuntimeNetwork(nn.Module):
    """Common part of the runtime wrappers: one compiled model per slice size, torch fallback, numpy in and out."""

    runtime = "torch"
    max_sizes = 8  # slice sizes compiled per wrapper; more run through torch

    def __init__(
        self,
        network: nn.Module,
        size: tuple[int, ...],
        source: str,
        model_for: Callable[[tuple[int, ...]], tuple[str | bytes, str]] | None = None,
    ) -> None:
        super().__init__()
        self.network = network  # the reference: fallback for inputs no exported model takes
        self.size = tuple(size)
        self.source = source
        self._model_for = model_for
        self._runs: dict[tuple[int, ...], Callable[[np.ndarray], np.ndarray]] = {}
        self._torch: set[tuple] = set()

    def _compile(self, model: str | bytes) -> Callable[[np.ndarray], np.ndarray]:
        raise NotImplementedError

    def _runner(self, size: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray] | None:
        """The compiled model for slices of ``size``, exported and compiled on first use (``None``: use torch)."""
        if size in self._runs:
            return self._runs[size]
        if size in self._torch or self._model_for is None or len(self._runs) >= self.max_sizes:
            return None
        try:
            model, source = self._model_for(size)
            self._runs[size] = self._compile(model)
        except Exception as e:  # this size cannot be exported or compiled: torch computes it
            self._torch.add(size)
            logger.warning(f"{self.runtime} cannot run {size} slices ({type(e).__name__}: {e}); using torch for them")
            return None
        logger.info(f"{self.runtime}: compiled the network for {size} slices ({source})")
        return self._runs[size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = None
        if x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad):
            run = self._runner(tuple(x.shape[2:]))
        if run is None:
            key = (x.device.type, tuple(x.shape[2:]), x.requires_grad)
            if key not in self._torch:
                self._torch.add(key)
                logger.info(f"{self.runtime}: input {tuple(x.shape)} on {x.device.type} runs through torch")
            return self.network(x)
        return torch.from_numpy(np.asarray(run(np.ascontiguousarray(x.detach().float().numpy()))))

    def extra_repr(self) -> str:
        return f"runtime={self.runtime!r}, sizes={sorted(self._runs)}, source={self.source!r}"


class OnnxRuntimeNetwork(_RuntimeNetwork):
    """A network run by ONNX Runtime's CPU execution provider (all graph optimisations).

    Args:
        network: the torch network (used for inputs no exported model takes).
        model: the ONNX model for ``size``: a path or its bytes.
        size: the slice size it was exported for.
        threads: intra-op threads (default: ``torch.get_num_threads()``).
        source: where the model came from (for the log and ``repr``).
        model_for: ``size -> (model, source)`` for slices of other sizes (``None``: they run through torch).
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        network: nn.Module,
        model: str | bytes,
        size: tuple[int, ...] = (512, 512),
        threads: int | None = None,
        source: str = "",
        model_for: Callable[[tuple[int, ...]], tuple[str | bytes, str]] | None = None,
    ) -> None:
        import onnxruntime as ort

        super().__init__(network, size, source, model_for)
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = int(threads or torch.get_num_threads())
        self.options.inter_op_num_threads = 1
        self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._runs[self.size] = self._compile(model)

    def _compile(self, model: str | bytes) -> Callable[[np.ndarray], np.ndarray]:
        import onnxruntime as ort

        session = ort.InferenceSession(model, self.options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]


class OpenVINONetwork(_RuntimeNetwork):
    """A network run by OpenVINO on the CPU (latency hint).

    Args:
        network: the torch network (used for inputs no exported model takes).
        model: the ONNX model for ``size``: a path or its bytes.
        size: the slice size it was exported for.
        threads: inference threads (default: ``torch.get_num_threads()``).
        precision: ``"fp32"`` (exact up to rounding; OpenVINO's own default on CPUs with bfloat16 units is bf16, so it
            is set explicitly), ``"bf16"`` (lossy; fp32 with a warning on a CPU without bfloat16 units, where OpenVINO
            would ignore it), ``"int8"`` (``model`` is a QDQ model: its quantised operations
            run in int8, the rest in fp32, measured faster here than with bf16) or ``"auto"`` (bf16 where the CPU
            has bfloat16 units, else fp32).
        source: where the model came from (for the log and ``repr``).
        model_for: ``size -> (model, source)`` for slices of other sizes (``None``: they run through torch).
        cache_dir: a folder for compiled models (``<cache_dir>/openvino/<sha256>.blob`` with a sidecar; ``None``:
            compile every time). The key is the SHA-256 of the ONNX bytes, the compile settings and OpenVINO's
            version; a blob whose bytes fail their recorded SHA-256, or that OpenVINO refuses, is compiled anew.
    """

    runtime = "openvino"

    def __init__(
        self,
        network: nn.Module,
        model: str | bytes,
        size: tuple[int, ...] = (512, 512),
        threads: int | None = None,
        precision: str = "fp32",
        source: str = "",
        model_for: Callable[[tuple[int, ...]], tuple[str | bytes, str]] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        import openvino  # noqa: F401  (fails here, before any work, where OpenVINO is not installed)

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}.")
        super().__init__(network, size, source, model_for)
        self.core = _openvino_core()
        if precision == "auto":
            precision = "bf16" if openvino_has_bf16() else "fp32"
        elif precision == "bf16" and not openvino_has_bf16():  # OpenVINO would ignore the hint: say what runs
            logger.warning("bf16 asked for, but this CPU has no bfloat16 units (AVX512_BF16 or AMX): running fp32")
            precision = "fp32"
        self.precision = precision
        self.cache_dir = cache_dir
        self.config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        self._runs[self.size] = self._compile(model)

    def _blob_key(self, model: bytes) -> str:
        import openvino as ov

        settings = json.dumps({"config": self.config, "openvino": ov.get_version(), "device": "CPU"}, sort_keys=True)
        return hashlib.sha256(hashlib.sha256(model).hexdigest().encode() + settings.encode()).hexdigest()

    def _compile(self, model: str | bytes) -> Callable[[np.ndarray], np.ndarray]:
        if isinstance(model, str):
            with open(model, "rb") as f:
                model = f.read()
        compiled = None
        blob = None
        if self.cache_dir:
            key = self._blob_key(model)
            blob = os.path.join(self.cache_dir, "openvino", f"{key}.blob")
            data = read_verified(blob, key)
            if data is not None:
                try:
                    compiled = self.core.import_model(io.BytesIO(data), "CPU", self.config)
                    logger.info(f"openvino: compiled model from {blob}")
                except Exception as e:  # another CPU or a blob OpenVINO cannot read: compile anew
                    logger.warning(f"openvino cannot import {blob} ({type(e).__name__}: {e}); compiling anew")
        if compiled is None:
            compiled = self.core.compile_model(self.core.read_model(model=model, weights=b""), "CPU", self.config)
            if blob is not None:
                try:
                    buffer = io.BytesIO()
                    compiled.export_model(buffer)
                    write_verified(blob, buffer.getvalue(), key)
                except Exception as e:  # a read-only or full cache folder: the run goes on without it
                    logger.warning(f"openvino: cannot cache the compiled model in {blob} ({type(e).__name__}: {e})")
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})[0].copy()


def openvino_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bfloat16 here (``BF16`` in its ``OPTIMIZATION_CAPABILITIES``: a CPU
    with AVX512_BF16 or AMX); ``False`` where OpenVINO is not installed."""
    try:
        return "BF16" in _openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


# why ONNX Runtime's int8 is not run where onnxruntime_has_int8() is False (docs/performance.md, issue 19)
ORT_INT8_REFUSED = (
    "ONNX Runtime's int8 convolutions saturate on an x86 CPU without VNNI (uint8 x int8 pairs summed in int16; "
    "measured: lung validation Dice 0.906 against 0.980 in fp32); run OpenVINO (runtime 'openvino' or 'auto') or "
    "precision 'fp32'"
)
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags, e.g. ``avx2``, ``avx512_vnni``: the ``flags`` line of ``/proc/cpuinfo``.

    Returns:
        the flags, or ``None`` where the OS does not list them (no ``/proc/cpuinfo``, or no ``flags`` line in it).
    """
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if line is None else frozenset(line.split(":", 1)[1].split())


@functools.lru_cache(maxsize=None)
def onnxruntime_has_int8() -> bool:
    """Whether ONNX Runtime's int8 kernels compute without overflow here: every CPU but an x86 one without VNNI
    (``avx512_vnni`` or ``avx_vnni``). Without VNNI its x86 kernels add pairs of uint8 x int8 products in int16
    (``vpmaddubsw``), which saturates (ONNX Runtime's quantization guide); OpenVINO's kernels do not.

    Returns:
        ``False`` on an x86 CPU without VNNI (from ``/proc/cpuinfo``, else numpy's CPU features), else ``True``.
    """
    if platform.machine().lower() not in _X86:
        return True
    flags = cpu_flags()
    if flags is not None:
        return "avx512_vnni" in flags or "avx_vnni" in flags
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return bool(features.get("AVX512VNNI"))


def int8_runs_here(runtime: str) -> bool:
    """Whether :func:`select_runtime` runs ``runtime``'s int8 on this CPU: OpenVINO's everywhere, ONNX Runtime's where
    :func:`onnxruntime_has_int8` (elsewhere it is refused with :data:`ORT_INT8_REFUSED`)."""
    return runtime != "onnxruntime" or onnxruntime_has_int8()


@functools.lru_cache(maxsize=None)
def _openvino_core() -> Any:
    """The process's one OpenVINO ``Core``, shared by every network (OpenVINO's advice: one ``Core`` per process, so
    that no ``Core`` is freed by the garbage collector while models compiled by it still run threads)."""
    import openvino as ov

    return ov.Core()


def _model_source(
    network: nn.Module, mode: str, size: tuple[int, ...], model_file: str | None, cache_dir: str | None
) -> tuple[bytes, str]:
    """The ONNX bytes for ``network``: a verified ``model_file``, a verified cached file, or a fresh export."""
    digest = network_digest(network, mode, size)
    if model_file and os.path.isfile(model_file):
        data = read_verified(model_file, digest)
        if data is not None:
            return data, model_file
        logger.info(f"{model_file} is not verified for these weights and settings: not used (exporting anew)")
    if cache_dir:
        cached = os.path.join(cache_dir, "onnx", f"{digest}.onnx")
        data = read_verified(cached, digest)
        if data is not None:
            return data, cached
        data = export_onnx(network, None, mode, size)
        try:
            write_verified(cached, data, digest)
            logger.info(f"exported the network to {cached}")
            return data, f"exported to {cached}"
        except OSError as e:  # a read-only or full cache folder: the run goes on with the export in memory
            logger.warning(f"cannot cache the exported network in {cached} ({type(e).__name__}: {e})")
    return export_onnx(network, None, mode, size), "exported in memory"


def _int8_source(
    network: nn.Module, mode: str, size: tuple[int, ...], record: Mapping[str, Any], cache_dir: str | None
) -> tuple[bytes, str]:
    """The int8 QDQ model for ``network`` at ``size`` from a calibration record: cached (verified), else quantised
    from the fp32 export (:func:`_model_source`) and cached."""
    import onnxruntime

    text = f"{network_digest(network, mode, size)}\n{record['ranges_sha256']}\nqdq\n{onnxruntime.__version__}\n"
    key = hashlib.sha256(text.encode()).hexdigest()
    cached = os.path.join(cache_dir, "onnx", f"{key}.int8.onnx") if cache_dir else None
    if cached:
        data = read_verified(cached, key)
        if data is not None:
            return data, cached
    data = quantize_qdq(_model_source(network, mode, size, None, cache_dir)[0], record["ranges"])
    if cached:
        try:
            write_verified(cached, data, key)
            return data, f"quantised to {cached}"
        except OSError as e:  # a read-only or full cache folder: the run goes on with the model in memory
            logger.warning(f"cannot cache the int8 model in {cached} ({type(e).__name__}: {e})")
    return data, "quantised in memory"


def _calibration_for(
    network: nn.Module, mode: str, calibration: str | os.PathLike | Mapping[str, Any] | None, required: bool
) -> dict[str, Any] | None:
    """The calibration record (a file, or a record in memory) if it was made for these weights and this fusion; else
    ``None`` with a log line, or, when int8 was asked for (``required``), a :class:`CalibrationError` naming the file
    and the reason."""
    name = "the calibration record" if isinstance(calibration, Mapping) else os.fspath(calibration or "")
    try:
        if calibration is None:
            raise CalibrationError("precision int8 needs a calibration record (runtime option 'calibration', made by "
                                   "`pyconv-monai quantize`)")  # fmt: skip
        if isinstance(calibration, Mapping):
            record = seal_calibration(calibration)
        else:
            record = read_calibration(calibration)
        if record["key"] != calibration_key(network, mode) or record["mode"] != mode:
            raise CalibrationError(f"{name} was calibrated for other weights or settings (fusion "
                                   f"{record['mode']!r}), not for this network with fusion {mode!r}")  # fmt: skip
    except CalibrationError as e:
        if required:
            raise
        if calibration is not None:  # a bundle without a record is the usual case; an unusable one is worth a warning
            missing = not isinstance(calibration, Mapping) and not os.path.exists(calibration)
            logger.log(logging.INFO if missing else logging.WARNING, f"{e}: int8 not used")
        return None
    return record


def select_runtime(
    network: nn.Module,
    runtime: str = "auto",
    device: str | torch.device = "cpu",
    model_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    precision: str = DEFAULT_PRECISION,
    mode: str = "auto",
    size: tuple[int, ...] = (512, 512),
    threads: int | None = None,
    calibration: str | os.PathLike | Mapping[str, Any] | None = None,
) -> nn.Module:
    """The network as the chosen runtime runs it; torch (the network itself) when that runtime cannot run.

    Args:
        network: the network with its trained weights (put in evaluation mode).
        runtime: ``"auto"``, ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (see the module docstring).
        device: where the network runs; ONNX Runtime and OpenVINO are used on the CPU only.
        model_file: an exported model to use when its sidecar verifies it (e.g. ``<bundle>/models/model.onnx``).
        cache_dir: the folder of exported and compiled models (default: the per-user
            :func:`~pyconv_monai.runtime.cache.default_cache_dir`; ``"off"``: export in memory, compile every run).
        precision: ``"auto"`` (default: int8 where ``calibration`` holds a record for these weights and fusion
            and the runtime's int8 kernels hold on this CPU, :func:`onnxruntime_has_int8`; else bf16 on OpenVINO
            where the CPU has bfloat16 units, else fp32), ``"fp32"``, ``"bf16"`` (OpenVINO only) or ``"int8"``
            (needs ``calibration``); the lossy ones are explained at :data:`PRECISIONS`.
        mode: PyConv fusion of the export (:data:`pyconv_monai.runtime.FUSE_MODES`), or ``"auto"`` (default): the
            fusion measured fastest on these runtimes, :data:`DEFAULT_FUSE_MODE`.
        size: the slice size to export for at once (other sizes are exported when they first come).
        threads: CPU threads of the runtime (default ``torch.get_num_threads()``).
        calibration: a calibration record: its file (``models/model_int8.json``) or the record itself
            (:func:`calibrate_network`); with ``"auto"`` a missing record, or one made for other weights, is skipped
            with a log line.

    Returns:
        a module taking and returning tensors like ``network``.

    Raises:
        ValueError: for an unknown runtime, precision or mode, and for ``"int8"`` on ONNX Runtime where
            :func:`onnxruntime_has_int8` is False.
        CalibrationError: (a ``ValueError``) ``"int8"`` without a valid calibration record for these weights.
        NonFiniteError: when a weight or buffer holds NaN or Inf (whatever the runtime).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if mode not in FUSE_MODES + ("auto",):
        raise ValueError(f"unknown fusion mode {mode!r}; choose one of {', '.join(FUSE_MODES)}.")
    check_finite_weights(network)
    network.eval()
    device = torch.device(device)
    if runtime == "torch":
        return network
    if device.type != "cpu":
        if runtime != "auto":
            logger.info(f"runtime {runtime} runs on the CPU only; using torch on {device}")
        return network
    if runtime == "auto":  # only the runtime that runs is imported (OpenVINO's start-up does not pay for ONNX Runtime)
        runtime = next((r for r in ("openvino", "onnxruntime") if _importable(r)), "torch")
        if runtime == "torch":
            logger.info("neither OpenVINO nor ONNX Runtime is installed: running the network with torch")
            return network
    elif not _importable(runtime):
        logger.warning(f"runtime {runtime} is not installed (pip install {runtime}): running the network with torch")
        return network
    size = tuple(int(s) for s in size)
    mode = DEFAULT_FUSE_MODE if mode == "auto" else mode
    record = None
    int8_here = int8_runs_here(runtime)
    if precision == "int8" and not int8_here:
        raise ValueError(f"precision 'int8' refused: {ORT_INT8_REFUSED}.")
    if precision in ("auto", "int8") and int8_here:
        record = _calibration_for(network, mode, calibration, required=precision == "int8")
    elif precision == "auto" and calibration is not None:
        logger.info(f"{ORT_INT8_REFUSED}: int8 not used")
    if record is not None:
        precision = "int8"
    elif precision == "auto":
        precision = "bf16" if runtime == "openvino" and openvino_has_bf16() else "fp32"
    folder = resolve_cache_dir(None if cache_dir is None else os.fspath(cache_dir))
    try:
        if record is not None:
            model, source = _int8_source(network, mode, size, record, folder)
        else:
            model_path = None if model_file is None else os.fspath(model_file)
            model, source = _model_source(network, mode, size, model_path, folder)

        def model_for(other: tuple[int, ...]) -> tuple[str | bytes, str]:  # other slice sizes, on first use
            if record is not None:
                return _int8_source(network, mode, other, record, folder)
            return _model_source(network, mode, other, None, folder)

        if runtime == "openvino":
            wrapped: nn.Module = OpenVINONetwork(network, model, size, threads, precision, source, model_for, folder)
            precision = wrapped.precision
        else:
            wrapped = OnnxRuntimeNetwork(network, model, size, threads, source, model_for)
    except Exception as e:  # an unexportable network or a runtime that refuses the model: the reference still runs
        logger.warning(f"{runtime} cannot run this network ({type(e).__name__}: {e}); running it with torch")
        return network
    detail = f", {precision if runtime == 'openvino' or precision == 'int8' else 'fp32'}, PyConv fusion {mode}"
    logger.info(f"running the network with {runtime}{detail} ({source})")
    return wrapped


def runtime_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of :func:`select_runtime` from a config mapping (unknown keys are an error)."""
    allowed = {"model_file", "cache_dir", "precision", "mode", "size", "threads", "calibration"}
    options = dict(options or {})
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown runtime option(s) {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return options
