# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""A :class:`PyConv` computed by Triton kernels: all pyramid levels in one launch, forward and backward.

The reference runs one grouped convolution per level and concatenates the outputs. :class:`TritonPyConv` computes
the same function from the same parameters with three implicit-GEMM kernels
(``_pyconv_triton_kernels``), each covering every level of the pyramid in one launch:

* forward: each program computes ``BLOCK_M`` output pixels of ``BLOCK_N`` output channels of one level, reducing
  over the kernel taps and over the input channels of those channels' groups; the output is written straight into
  its place in the concatenated result (no ``torch.cat``);
* input gradient: each program computes ``BLOCK_M`` pixels of ``BLOCK_N`` input channels, summing over every level
  (transposed convolution with the flipped taps);
* weight gradient: each program reduces one tap of one weight tile over a chunk of pixels and adds it atomically
  into a float32 buffer laid out like the flat concatenation of the levels' weights.

Groups are handled inside a tile by a block-diagonal mask on the weight tile (only same-group weights are loaded),
so tensor cores (``tl.dot``) run on tiles of at least 16 x 16 even when a group has 2 input channels. Inputs are
bf16/fp16 under autocast (float32 accumulation), or float32 (exact: IEEE products, for tests). Any memory format is
accepted (the kernels take strides); channels_last is the fast one. Only 2D, stride-1 PyConvs are supported (every
PyConv of :class:`~pyconv_monai.networks.PyConvUNet`); :func:`triton_supported` says which.

The three kernels are ``torch.library`` custom operators (``pyconv_monai::pyconv_triton_fwd`` and its two
gradients) with fake implementations and a FLOP formula, so ``torch.compile`` keeps them as opaque calls and
``torch.utils.flop_counter`` counts the reference's multiply-adds.

Triton is optional: without it, building a :class:`TritonPyConv` raises an ``ImportError`` that says so. CUDA
tensors run compiled kernels; CPU tensors run them in Triton's interpreter, only when ``TRITON_INTERPRET=1`` is
set (slow; for tests). :func:`pyconv_triton_reference` computes the same tiles with PyTorch convolutions, from the
same tile tables, so that the tiling and indexing are tested where Triton is not installed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pyconv_monai.networks.blocks.pyconv import PyConv
from pyconv_monai.networks.blocks.pyconv_fast import FastPyConv, pyconv_plan

__all__ = [
    "TRITON_BLOCKS",
    "TritonPyConv",
    "pyconv_triton",
    "pyconv_triton_reference",
    "set_triton_blocks",
    "triton_available",
    "triton_supported",
    "tile_tables",
]

try:  # optional: GPU builds of torch bring it; `pip install triton` elsewhere (Linux x86-64/aarch64)
    import triton

    from pyconv_monai.networks.blocks import _pyconv_triton_kernels as _kernels_src

    _TRITON_ERROR: str | None = None
except ImportError as e:  # pragma: no cover - depends on the installation
    triton = None
    _kernels_src = None
    _TRITON_ERROR = f"{type(e).__name__}: {e}"

# block sizes: pixels per program (M), output (forward, weight gradient) or input (input gradient) channels per
# program (N), reduction channels per step (K; 16 when every tile reduces over at most 16 channels)
TRITON_BLOCKS: dict[str, int] = {"M": 128, "N": 16, "K": 32, "DW_M": 128, "warps": 4, "stages": 2}


def set_triton_blocks(spec: str | dict[str, int]) -> dict[str, int]:
    """Change :data:`TRITON_BLOCKS` (e.g. the choice of ``benchmarks/triton_tune.py``), in place.

    Args:
        spec: ``{"M": 64, ...}`` or ``"M=64,N=16,K=32,DW_M=128,warps=4,stages=2"`` (any subset of the keys).
            The environment variable ``PYCONV_TRITON_BLOCKS`` is read in this form when the module is imported.

    Returns:
        the blocks now in use.

    Raises:
        ValueError: for an unknown key, or M, N, K, DW_M that are not powers of two of at least 16.
    """
    if isinstance(spec, str):
        items = [item.split("=") for item in spec.replace(" ", "").split(",") if item]
        if any(len(item) != 2 for item in items):
            raise ValueError(f"PYCONV_TRITON_BLOCKS / set_triton_blocks: expected 'KEY=INT,...', got {spec!r}.")
        spec = {k: int(v) for k, v in items}
    for key, value in spec.items():
        if key not in TRITON_BLOCKS:
            raise ValueError(f"unknown Triton block key {key!r}; choose among {', '.join(TRITON_BLOCKS)}.")
        if key in ("M", "N", "K", "DW_M") and (value < 16 or value & (value - 1)):
            raise ValueError(f"Triton block {key} must be a power of two of at least 16, got {value}.")
        if value < 1:
            raise ValueError(f"Triton block {key} must be positive, got {value}.")
    TRITON_BLOCKS.update(spec)
    return dict(TRITON_BLOCKS)


if os.environ.get("PYCONV_TRITON_BLOCKS"):
    set_triton_blocks(os.environ["PYCONV_TRITON_BLOCKS"])


def triton_available() -> bool:
    """Whether Triton is importable (the kernels can run on CUDA, or in its interpreter on the CPU)."""
    return triton is not None


def triton_supported(conv: nn.Module) -> bool:
    """Whether :class:`TritonPyConv` can compute this PyConv: 2D, stride 1, odd kernels ("same" padding)."""
    conv = conv.reference if isinstance(conv, FastPyConv) else conv
    return (
        isinstance(conv, PyConv)
        and conv.spatial_dims == 2
        and all(tuple(level.stride) == (1, 1) for level in conv.levels)
        and all(k % 2 == 1 for k in conv.kernel_sizes)
    )


# ------------------------------------------------------------------------------------------------ tile tables


def _spec(in_channels: int, kernel_sizes: Sequence[int], groups: Sequence[int], couts: Sequence[int]) -> list[int]:
    """The flat integer description of a pyramid passed to the custom operators: cin, then (k, g, cout) per level."""
    spec = [int(in_channels)]
    for k, g, c in zip(kernel_sizes, groups, couts):
        spec += [int(k), int(g), int(c)]
    return spec


def _levels(spec: Sequence[int]) -> tuple[int, list[tuple[int, int, int, int, int, int]]]:
    """``cin`` and per level ``(k, cin_g, cout_g, out_off, w_off, cout)`` from a spec."""
    cin, rest = spec[0], spec[1:]
    levels, out_off, w_off = [], 0, 0
    for i in range(0, len(rest), 3):
        k, g, c = rest[i : i + 3]
        levels.append((k, cin // g, c // g, out_off, w_off, c))
        out_off += c
        w_off += c * (cin // g) * k * k
    return cin, levels


@functools.lru_cache(maxsize=256)
def tile_tables(spec: tuple[int, ...], block_n: int, block_k: int) -> dict[str, Any]:
    """The tile tables of the three kernels for one pyramid (rows as in ``_pyconv_triton_kernels``).

    Args:
        spec: ``(cin, k0, g0, cout0, k1, g1, cout1, ...)``.
        block_n: channels of a tile (``BLOCK_N``).
        block_k: reduction channels of a weight-gradient row (``BLOCK_K``).

    Returns:
        ``{"fwd", "dx", "dw"}``: lists of rows; ``"taps"``: the largest ``k * k``; ``"cout"``: total output
        channels; ``"numel"``: size of the flat weight; ``"max_k"``: the widest forward reduction of a tile.
    """
    cin, levels = _levels(spec)
    fwd, dw, dx = [], [], []
    for k, cin_g, cout_g, out_off, w_off, cout in levels:
        for c0 in range(0, cout, block_n):
            lo = (c0 // cout_g) * cin_g
            hi = ((min(c0 + block_n, cout) - 1) // cout_g + 1) * cin_g
            fwd.append((k, cin_g, cout_g, c0, out_off, w_off, cout, lo, hi))
            for s in range(lo, hi, block_k):
                dw.append((k, cin_g, cout_g, c0, out_off, w_off, cout, s, min(s + block_k, hi)))
    for ci0 in range(0, cin, block_n):  # one row per level, consecutive: the kernel loops over the levels
        for k, cin_g, cout_g, out_off, w_off, cout in levels:
            lo = (ci0 // cin_g) * cout_g
            hi = ((min(ci0 + block_n, cin) - 1) // cin_g + 1) * cout_g
            dx.append((k, cin_g, cout_g, ci0, out_off, w_off, cout, lo, hi))
    return {
        "fwd": fwd,
        "dx": dx,
        "dw": dw,
        "taps": max(lv[0] ** 2 for lv in levels),
        "cout": sum(lv[5] for lv in levels),
        "numel": sum(lv[5] * lv[1] * lv[0] ** 2 for lv in levels),
        "max_k": max(r[8] - r[7] for r in fwd),
        "nlev": len(levels),
    }


@functools.lru_cache(maxsize=256)
def _table_tensor(spec: tuple[int, ...], which: str, block_n: int, block_k: int, device: str) -> torch.Tensor:
    rows = tile_tables(spec, block_n, block_k)[which]
    return torch.tensor(rows, dtype=torch.int32, device=device).reshape(-1)


def _block_k(spec: tuple[int, ...]) -> int:
    """Reduction channels per step: 16 when no forward tile reduces over more (first units, small groups)."""
    return 16 if tile_tables(spec, TRITON_BLOCKS["N"], TRITON_BLOCKS["K"])["max_k"] <= 16 else TRITON_BLOCKS["K"]


# ------------------------------------------------------------------------------------------------ launching


def _patch_interpreter_index(interpreter: Any) -> None:
    """Let Triton's interpreter use a loaded scalar as a ``range`` bound under NumPy 2.

    The interpreter holds scalars as 1-element arrays and converts them with ``int(array)``, which NumPy 2 refuses
    for arrays of one dimension (Triton 3.6); the kernels' loop bounds come from the tile tables, so they need it.
    """
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_pyconv_patched", False):
        return

    def patched(tensor: Any, scope: Any) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._pyconv_patched = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


@functools.lru_cache(maxsize=2)
def _compiled(interpret: bool) -> dict[str, Any]:
    """The kernels, ``triton.jit``-ed for CUDA or wrapped in Triton's interpreter for CPU tensors."""
    if interpret:
        import triton.runtime.interpreter as interpreter

        _patch_interpreter_index(interpreter)
        wrap = interpreter.InterpretedFunction
    else:
        wrap = triton.jit
    return {
        name: wrap(getattr(_kernels_src, f"pyconv_{name}_kernel"))
        for name in ("fwd", "dx", "dw")
    }


def _check_runtime(x: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
    if triton is None:
        raise ImportError(
            "pyconv_monai.networks.blocks.pyconv_triton: Triton is not installed (" + str(_TRITON_ERROR) + "); "
            "install it (`pip install triton`, Linux) or use another optimize_pyconv mode."
        )
    if x.device.type == "cuda":
        return _compiled(False), {"num_warps": TRITON_BLOCKS["warps"], "num_stages": TRITON_BLOCKS["stages"]}
    if x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1":
        return _compiled(True), {}
    raise RuntimeError(
        f"pyconv_monai.networks.blocks.pyconv_triton: the Triton PyConv kernels need CUDA tensors, got a "
        f"{x.device.type} tensor; on the CPU they run only in Triton's interpreter (set TRITON_INTERPRET=1, for "
        "tests), otherwise use another optimize_pyconv mode."
    )


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.stride())


def _like(x: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """An empty ``(N, channels, H, W)`` tensor in ``x``'s memory format (channels_last or contiguous)."""
    n, _, h, w = x.shape
    # channels_last unless x is NCHW with several channels (a one-channel image gives the fast layout)
    nhwc = x.shape[1] == 1 or (x.stride(1) == 1 and h * w > 1)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    return torch.empty((n, channels, h, w), dtype=dtype, device=x.device, memory_format=fmt)


def _fwd_impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: tuple[int, ...]) -> torch.Tensor:
    kernels, opts = _check_runtime(x)
    bn = TRITON_BLOCKS["N"]
    bk = _block_k(spec)
    tables = tile_tables(spec, bn, bk)
    tab = _table_tensor(spec, "fwd", bn, bk, str(x.device))
    y = _like(x, tables["cout"], x.dtype)
    n, _, h, w = x.shape
    npix = n * h * w
    grid = (triton.cdiv(npix, TRITON_BLOCKS["M"]), len(tables["fwd"]))
    kernels["fwd"][grid](
        x,
        weight,
        bias if bias is not None else weight,
        y,
        tab,
        npix,
        h,
        w,
        *_strides(x),
        *_strides(y),
        HAS_BIAS=bias is not None,
        IEEE=x.dtype == torch.float32,
        BLOCK_M=TRITON_BLOCKS["M"],
        BLOCK_N=bn,
        BLOCK_K=bk,
        **opts,
    )
    return y


def _dx_impl(grad_y: torch.Tensor, weight: torch.Tensor, x_like: torch.Tensor, spec: tuple[int, ...]) -> torch.Tensor:
    kernels, opts = _check_runtime(grad_y)
    bn = TRITON_BLOCKS["N"]
    tables = tile_tables(spec, bn, TRITON_BLOCKS["K"])
    tab = _table_tensor(spec, "dx", bn, TRITON_BLOCKS["K"], str(grad_y.device))
    cin = spec[0]
    dx = _like(x_like, cin, x_like.dtype)
    n, _, h, w = grad_y.shape
    npix = n * h * w
    max_red = max(r[8] - r[7] for r in tables["dx"])
    grid = (triton.cdiv(npix, TRITON_BLOCKS["M"]), triton.cdiv(cin, bn))
    kernels["dx"][grid](
        grad_y,
        weight,
        dx,
        tab,
        npix,
        h,
        w,
        cin,
        tables["nlev"],
        *_strides(grad_y),
        *_strides(dx),
        IEEE=grad_y.dtype == torch.float32,
        BLOCK_M=TRITON_BLOCKS["M"],
        BLOCK_N=bn,
        BLOCK_K=16 if max_red <= 16 else TRITON_BLOCKS["K"],
        **opts,
    )
    return dx


def _dw_impl(x: torch.Tensor, grad_y: torch.Tensor, spec: tuple[int, ...]) -> torch.Tensor:
    kernels, opts = _check_runtime(x)
    bn = TRITON_BLOCKS["N"]
    bk = _block_k(spec)
    tables = tile_tables(spec, bn, bk)
    tab = _table_tensor(spec, "dw", bn, bk, str(x.device))
    dw = torch.zeros(tables["numel"], dtype=torch.float32, device=x.device)
    n, _, h, w = x.shape
    npix = n * h * w
    bm = TRITON_BLOCKS["DW_M"]
    rows = len(tables["dw"])
    taps = tables["taps"]
    # enough programs to fill the GPU (tap and tile programs first), each reducing one chunk of pixels
    chunks = max(1, min(triton.cdiv(npix, bm), triton.cdiv(4096, rows * taps)))
    chunk = triton.cdiv(triton.cdiv(npix, chunks), bm) * bm
    chunks = triton.cdiv(npix, chunk)
    kernels["dw"][(taps, rows, chunks)](
        x,
        grad_y,
        dw,
        tab,
        npix,
        h,
        w,
        chunk,
        taps,
        *_strides(x),
        *_strides(grad_y),
        IEEE=x.dtype == torch.float32,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        **opts,
    )
    return dw


# -------------------------------------------------------------------------------------- custom operators


@torch.library.custom_op("pyconv_monai::pyconv_triton_fwd", mutates_args=())
def _fwd_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: list[int]) -> torch.Tensor:
    return _fwd_impl(x, weight, bias, tuple(spec))


@_fwd_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: list[int]) -> torch.Tensor:
    return _like(x, sum(spec[3::3]), x.dtype)


@torch.library.custom_op("pyconv_monai::pyconv_triton_dx", mutates_args=())
def _dx_op(grad_y: torch.Tensor, weight: torch.Tensor, x_like: torch.Tensor, spec: list[int]) -> torch.Tensor:
    return _dx_impl(grad_y, weight, x_like, tuple(spec))


@_dx_op.register_fake
def _(grad_y: torch.Tensor, weight: torch.Tensor, x_like: torch.Tensor, spec: list[int]) -> torch.Tensor:
    return _like(x_like, spec[0], x_like.dtype)


@torch.library.custom_op("pyconv_monai::pyconv_triton_dw", mutates_args=())
def _dw_op(x: torch.Tensor, grad_y: torch.Tensor, spec: list[int]) -> torch.Tensor:
    return _dw_impl(x, grad_y, tuple(spec))


@_dw_op.register_fake
def _(x: torch.Tensor, grad_y: torch.Tensor, spec: list[int]) -> torch.Tensor:
    _, levels = _levels(spec)
    return x.new_empty(sum(c * cg * k * k for k, cg, _, _, _, c in levels), dtype=torch.float32)


def _setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    x, weight, bias, spec = inputs
    ctx.save_for_backward(x, weight)
    ctx.spec = spec
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx: Any, grad_y: torch.Tensor) -> tuple:
    x, weight = ctx.saved_tensors
    grad_y = grad_y.to(x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not grad_y.is_contiguous(
        memory_format=torch.channels_last
    ):
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
    dx = _dx_op(grad_y, weight, x, ctx.spec) if ctx.needs_input_grad[0] else None
    dw = _dw_op(x, grad_y, ctx.spec).to(weight.dtype) if ctx.needs_input_grad[1] else None
    db = None
    if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
        db = grad_y.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
    return dx, dw, db, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _flops(x_shape: Sequence[int], spec: Sequence[int]) -> int:
    """FLOPs of the reference PyConv (2 per multiply-add; the zeros of the block-diagonal tiles not counted)."""
    _, levels = _levels(spec)
    n, _, h, w = x_shape
    return 2 * n * h * w * sum(c * cg * k * k for k, cg, _, _, _, c in levels)


try:  # torch.utils.flop_counter (torch >= 2.4): FlopCounterMode and so `count_gmac` see the reference MACs
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.pyconv_monai.pyconv_triton_fwd)
    def _fwd_flops(x_shape, weight_shape, bias_shape, spec, *args, out_shape=None, **kwargs) -> int:
        return _flops(x_shape, spec)

    @register_flop_formula(torch.ops.pyconv_monai.pyconv_triton_dx)
    def _dx_flops(grad_shape, weight_shape, x_shape, spec, *args, out_shape=None, **kwargs) -> int:
        return _flops(x_shape, spec)

    @register_flop_formula(torch.ops.pyconv_monai.pyconv_triton_dw)
    def _dw_flops(x_shape, grad_shape, spec, *args, out_shape=None, **kwargs) -> int:
        return _flops(x_shape, spec)

except (ImportError, AttributeError, TypeError):  # pragma: no cover - older torch
    pass


def pyconv_triton(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor] | None, groups: Sequence[int]
) -> torch.Tensor:
    """All pyramid levels of a 2D stride-1 PyConv in one Triton launch (differentiable).

    Args:
        x: ``(N, C, H, W)``, float32, bfloat16 or float16, on CUDA (or on the CPU with ``TRITON_INTERPRET=1``).
        weights: each level's ``(cout, C // groups, k, k)`` weight, in level order; cast to ``x``'s dtype.
        biases: each level's bias, or ``None``.
        groups: each level's groups.

    Returns:
        ``(N, sum(cout), H, W)`` in ``x``'s dtype and memory format: the levels' outputs concatenated.
    """
    spec = _spec(x.shape[1], [w.shape[-1] for w in weights], groups, [w.shape[0] for w in weights])
    flat = torch.cat([w.reshape(-1) for w in weights]).to(x.dtype)
    bias = None if biases is None else torch.cat(list(biases)).to(x.dtype)
    return _fwd_op(x, flat, bias, spec)


def pyconv_triton_reference(x: torch.Tensor, weights: Sequence[torch.Tensor], groups: Sequence[int]) -> dict:
    """What the three kernels compute, tile by tile from the same tile tables, with PyTorch convolutions.

    Each forward row becomes a dense convolution of the row's input channels ``[lo, hi)`` with the block-diagonal
    weight tile the kernel loads (same masks, same indices into the flat weight); the input-gradient rows a
    transposed convolution; the weight-gradient rows the per-tap products summed over pixels and scattered to the
    flat weight. Checks the tiling and indexing where Triton is not installed (slow: for tests).

    Args:
        x: ``(N, C, H, W)`` float tensor.
        weights: each level's weight.
        groups: each level's groups.

    Returns:
        ``{"y": output, "dx": fn(grad_y), "dw": fn(grad_y)}`` with ``dw`` the flat weight gradient.
    """
    spec = tuple(_spec(x.shape[1], [w.shape[-1] for w in weights], groups, [w.shape[0] for w in weights]))
    flat = torch.cat([w.reshape(-1) for w in weights])
    bn = TRITON_BLOCKS["N"]
    bk = _block_k(spec)
    tables = tile_tables(spec, bn, bk)

    def tile_weight(row: tuple, co: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
        """``(len(co), len(ci), k, k)``: the kernel's masked load w[w_off + (co * cin_g + cl) * k * k + t]."""
        k, cin_g, cout_g, _, _, w_off, cout, _, _ = row
        cl = ci[None, :] - (co // cout_g)[:, None] * cin_g
        mask = (cl >= 0) & (cl < cin_g) & (co < cout)[:, None]
        t = torch.arange(k * k)
        idx = w_off + (co[:, None, None] * cin_g + cl[..., None]) * k * k + t
        return torch.where(mask[..., None], flat[idx.clamp(0, flat.numel() - 1)], 0.0).reshape(len(co), len(ci), k, k)

    y = x.new_zeros(x.shape[0], tables["cout"], *x.shape[2:])
    for row in tables["fwd"]:
        k, _, _, c0, out_off, _, cout, lo, hi = row
        co = torch.arange(c0, min(c0 + bn, cout))
        wt = tile_weight(row, co, torch.arange(lo, hi))
        y[:, out_off + c0 : out_off + c0 + len(co)] = F.conv2d(x[:, lo:hi], wt, padding=k // 2)

    def dx(grad_y: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for row in tables["dx"]:
            k, _, _, ci0, out_off, _, _, lo, hi = row
            ci = torch.arange(ci0, min(ci0 + bn, x.shape[1]))
            wt = tile_weight(row, torch.arange(lo, hi), ci)  # (co, ci, k, k)
            out[:, ci] += F.conv_transpose2d(grad_y[:, out_off + lo : out_off + hi], wt, padding=k // 2)
        return out

    def dw(grad_y: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(tables["numel"], dtype=x.dtype)
        for row in tables["dw"]:
            k, cin_g, cout_g, c0, out_off, w_off, cout, lo, hi = row
            co = torch.arange(c0, min(c0 + bn, cout))
            ci = torch.arange(lo, hi)
            xp = F.pad(x[:, lo:hi], [k // 2] * 4)
            g = grad_y[:, out_off + c0 : out_off + c0 + len(co)]
            for t in range(k * k):
                kh, kw = divmod(t, k)
                shifted = xp[:, :, kh : kh + x.shape[2], kw : kw + x.shape[3]]
                prod = torch.einsum("nihw,nohw->io", shifted, g)  # (ci, co)
                cl = ci[:, None] - (co // cout_g)[None, :] * cin_g
                mask = (cl >= 0) & (cl < cin_g)
                idx = w_off + (co[None, :] * cin_g + cl) * k * k + t
                out.index_add_(0, idx[mask], prod[mask])
        return out

    return {"y": y, "dx": dx, "dw": dw}


class TritonPyConv(FastPyConv):
    """A 2D stride-1 :class:`PyConv` computed by the Triton kernels: one launch for all levels (and one per gradient).

    Like :class:`FastPyConv` (which it extends, so ``optimize_pyconv``, ``pyconv_modes`` and ``state_dict`` treat it
    alike), it holds the reference module's ``levels``: same parameters, same ``state_dict`` keys; the flat weight
    is built from them at every call. Under ``torch.autocast`` the input and weights are cast to the autocast dtype
    (as a convolution would be) and the output has that dtype; otherwise the input's dtype is used (float32: exact
    products). ``torch.jit.script`` compiles the reference module in its place.

    Args:
        conv: the reference ``PyConv`` (or a ``FastPyConv`` whose reference is taken).

    Raises:
        ImportError: when Triton is not installed.
        ValueError: for a PyConv the kernels do not cover (not 2D, a stride other than 1).
    """

    def __init__(self, conv: PyConv) -> None:
        if triton is None:
            raise ImportError(
                "optimize_pyconv mode 'triton' needs the triton package, which is not installed ("
                + str(_TRITON_ERROR)
                + "); install it (`pip install triton`; CUDA builds of torch bring it) or choose another mode."
            )
        ref = conv.reference if isinstance(conv, FastPyConv) else conv
        if not triton_supported(ref):
            raise ValueError(
                "TritonPyConv computes 2D stride-1 PyConvs only, got "
                f"spatial_dims={getattr(ref, 'spatial_dims', None)}, stride="
                f"{tuple(ref.levels[0].stride) if isinstance(ref, PyConv) else None}."
            )
        super().__init__(ref, pyconv_plan(ref.kernel_sizes, ref.groups, "reference"))  # MACs: the reference's
        self.mode = "triton"

    def extra_repr(self) -> str:
        return f"mode='triton', kernels={list(self.kernel_sizes)}, groups={list(self.groups)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        autocast = device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type)
        if autocast:
            x = x.to(torch.get_autocast_dtype(device_type))
        weights = [level.weight for level in self.levels]
        biases = None if self.levels[0].bias is None else [level.bias for level in self.levels]
        if not autocast:
            return pyconv_triton(x, weights, biases, self.groups)
        with torch.autocast(device_type, enabled=False):
            return pyconv_triton(x, weights, biases, self.groups)
