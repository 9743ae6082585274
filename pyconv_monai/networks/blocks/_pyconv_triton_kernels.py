# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Triton kernels of :mod:`pyconv_monai.networks.blocks.pyconv_triton` (imported only where Triton is installed).

The functions are plain Python with Triton's language; ``pyconv_triton`` wraps them in ``triton.jit`` for CUDA
tensors or in Triton's interpreter for CPU tensors (tests). This module deliberately has no
``from __future__ import annotations``: Triton reads the ``tl.constexpr`` annotations as objects.

Only builtins of ``triton.language`` are used (no ``@triton.jit`` helpers such as ``tl.zeros``), so that the
interpreter runs the kernels also when ``TRITON_INTERPRET`` was unset when Triton was imported.

All three kernels are implicit GEMMs over a 2D "same"-padded, stride-1 convolution of an ``(N, C, H, W)`` tensor
with arbitrary strides (channels_last is the fast layout); every pyramid level of a PyConv is covered by rows of a
tile table (int32, 9 entries a row)::

    k, cin_g, cout_g, c0, out_off, w_off, cout, lo, hi

``k``: the level's kernel size; ``cin_g`` / ``cout_g``: input / output channels per group; ``c0``: first channel
of the tile (output channel of the level for the forward and weight-gradient kernels, input channel for the
input-gradient kernel); ``out_off``: the level's first channel in the concatenated output; ``w_off``: offset of the
level's weight ``(cout, cin_g, k, k)`` in the flat concatenation of all levels' weights; ``cout``: the level's
output channels; ``[lo, hi)``: the reduction channels of the tile (input channels for forward and weight
gradient, the level's output channels for the input gradient). Groups enter as a block-diagonal mask on the
weight tile: a weight is loaded only where the tile's input and output channel belong to the same group.
"""

import triton.language as tl


def pyconv_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    tab_ptr,
    NPIX,  # noqa: N803
    H,  # noqa: N803
    W,  # noqa: N803
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    HAS_BIAS: tl.constexpr,  # noqa: N803
    IEEE: tl.constexpr,  # noqa: N803
    BLOCK_M: tl.constexpr,  # noqa: N803
    BLOCK_N: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
):
    """y[:, out_off + c0 : out_off + c0 + BLOCK_N] of one tile row for BLOCK_M output pixels."""
    pid_m = tl.program_id(0)
    row = tab_ptr + tl.program_id(1) * 9
    k = tl.load(row + 0)
    cin_g = tl.load(row + 1)
    cout_g = tl.load(row + 2)
    c0 = tl.load(row + 3)
    out_off = tl.load(row + 4)
    w_off = tl.load(row + 5)
    cout = tl.load(row + 6)
    lo = tl.load(row + 7)
    hi = tl.load(row + 8)

    p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pmask = p < NPIX
    n = p // (H * W)
    r = p - n * (H * W)
    h = r // W
    w = r - h * W
    co = c0 + tl.arange(0, BLOCK_N)
    nmask = co < cout
    grp = co // cout_g
    half = k // 2
    kk2 = k * k
    x_base = x_ptr + n.to(tl.int64) * sxn
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for t in range(0, kk2):
        kh = t // k
        kw = t - kh * k
        ih = h + kh - half
        iw = w + kw - half
        valid = pmask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        pix = x_base + ih * sxh + iw * sxw
        for c in range(lo, hi, BLOCK_K):
            ci = c + tl.arange(0, BLOCK_K)
            cmask = ci < hi
            a = tl.load(pix[:, None] + ci[None, :] * sxc, mask=valid[:, None] & cmask[None, :], other=0.0)
            cl = ci[:, None] - grp[None, :] * cin_g  # input channel within the output channel's group
            wmask = (cl >= 0) & (cl < cin_g) & cmask[:, None] & nmask[None, :]
            wv = tl.load(w_ptr + w_off + (co[None, :] * cin_g + cl) * kk2 + t, mask=wmask, other=0.0)
            if IEEE:
                acc = tl.dot(a, wv, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, wv, acc)
    if HAS_BIAS:
        bias = tl.load(b_ptr + out_off + co, mask=nmask, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    y_off = n.to(tl.int64) * syn + h * syh + w * syw
    y_ptrs = y_ptr + y_off[:, None] + (out_off + co)[None, :] * syc
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=pmask[:, None] & nmask[None, :])


def pyconv_dx_kernel(
    dy_ptr,
    w_ptr,
    dx_ptr,
    tab_ptr,
    NPIX,  # noqa: N803
    H,  # noqa: N803
    W,  # noqa: N803
    CIN,  # noqa: N803
    NLEV,  # noqa: N803
    syn,
    syc,
    syh,
    syw,
    sxn,
    sxc,
    sxh,
    sxw,
    IEEE: tl.constexpr,  # noqa: N803
    BLOCK_M: tl.constexpr,  # noqa: N803
    BLOCK_N: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
):
    """dx[:, c0 : c0 + BLOCK_N] for BLOCK_M pixels, summed over all levels (rows pid_c * NLEV ... + NLEV - 1)."""
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pmask = p < NPIX
    n = p // (H * W)
    r = p - n * (H * W)
    h = r // W
    w = r - h * W
    dy_base = dy_ptr + n.to(tl.int64) * syn
    ci = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    imask = ci < CIN
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for lev in range(0, NLEV):
        row = tab_ptr + (pid_c * NLEV + lev) * 9
        k = tl.load(row + 0)
        cin_g = tl.load(row + 1)
        cout_g = tl.load(row + 2)
        out_off = tl.load(row + 4)
        w_off = tl.load(row + 5)
        lo = tl.load(row + 7)
        hi = tl.load(row + 8)
        half = k // 2
        kk2 = k * k
        for t in range(0, kk2):
            kh = t // k
            kw = t - kh * k
            oh = h - kh + half
            ow = w - kw + half
            valid = pmask & (oh >= 0) & (oh < H) & (ow >= 0) & (ow < W)
            pix = dy_base + oh * syh + ow * syw
            for c in range(lo, hi, BLOCK_K):
                co = c + tl.arange(0, BLOCK_K)
                cmask = co < hi
                a = tl.load(
                    pix[:, None] + (out_off + co)[None, :] * syc, mask=valid[:, None] & cmask[None, :], other=0.0
                )
                cl = ci[None, :] - (co // cout_g)[:, None] * cin_g
                wmask = (cl >= 0) & (cl < cin_g) & cmask[:, None] & imask[None, :]
                wv = tl.load(w_ptr + w_off + (co[:, None] * cin_g + cl) * kk2 + t, mask=wmask, other=0.0)
                if IEEE:
                    acc = tl.dot(a, wv, acc, input_precision="ieee")
                else:
                    acc = tl.dot(a, wv, acc)
    dx_off = n.to(tl.int64) * sxn + h * sxh + w * sxw
    dx_ptrs = dx_ptr + dx_off[:, None] + ci[None, :] * sxc
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=pmask[:, None] & imask[None, :])


def pyconv_dw_kernel(
    x_ptr,
    dy_ptr,
    dw_ptr,
    tab_ptr,
    NPIX,  # noqa: N803
    H,  # noqa: N803
    W,  # noqa: N803
    CHUNK,  # noqa: N803
    TAPS,  # noqa: N803
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    IEEE: tl.constexpr,  # noqa: N803
    BLOCK_M: tl.constexpr,  # noqa: N803
    BLOCK_N: tl.constexpr,  # noqa: N803
    BLOCK_K: tl.constexpr,  # noqa: N803
):
    """Adds one pixel chunk's contribution to the weight gradient of one tile row, one tap per TAPS programs.

    Grid ``(TAPS, rows, chunks)``: the taps vary fastest, so the programs running together read the same pixel
    chunk (shifted by their tap) and share it in L2.
    """
    pid_t = tl.program_id(0)
    row = tab_ptr + tl.program_id(1) * 9
    pid_p = tl.program_id(2)
    k = tl.load(row + 0)
    cin_g = tl.load(row + 1)
    cout_g = tl.load(row + 2)
    c0 = tl.load(row + 3)
    out_off = tl.load(row + 4)
    w_off = tl.load(row + 5)
    cout = tl.load(row + 6)
    lo = tl.load(row + 7)
    hi = tl.load(row + 8)
    co = c0 + tl.arange(0, BLOCK_N)
    nmask = co < cout
    ci = lo + tl.arange(0, BLOCK_K)
    cmask = ci < hi
    cl = ci[:, None] - (co // cout_g)[None, :] * cin_g
    wmask = (cl >= 0) & (cl < cin_g) & cmask[:, None] & nmask[None, :]
    half = k // 2
    kk2 = k * k
    p_start = pid_p * CHUNK
    for t in range(pid_t, kk2, TAPS):
        kh = t // k
        kw = t - kh * k
        acc = tl.full((BLOCK_K, BLOCK_N), 0.0, tl.float32)
        for p0 in range(p_start, p_start + CHUNK, BLOCK_M):
            p = p0 + tl.arange(0, BLOCK_M)
            pmask = p < NPIX
            n = p // (H * W)
            r = p - n * (H * W)
            h = r // W
            w = r - h * W
            ih = h + kh - half
            iw = w + kw - half
            valid = pmask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            nb = n.to(tl.int64)
            a = tl.load(
                x_ptr + (nb * sxn + ih * sxh + iw * sxw)[:, None] + ci[None, :] * sxc,
                mask=valid[:, None] & cmask[None, :],
                other=0.0,
            )
            b = tl.load(
                dy_ptr + (nb * syn + h * syh + w * syw)[:, None] + (out_off + co)[None, :] * syc,
                mask=pmask[:, None] & nmask[None, :],
                other=0.0,
            )
            if IEEE:
                acc = tl.dot(tl.trans(a), b, acc, input_precision="ieee")
            else:
                acc = tl.dot(tl.trans(a), b, acc)
        tl.atomic_add(dw_ptr + w_off + (co[None, :] * cin_g + cl) * kk2 + t, acc, mask=wmask)
