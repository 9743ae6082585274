"""The Triton PyConv kernels compute the reference function (forward, input and weight gradients).

On the CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, float32, IEEE products: 1e-5), on small
shapes that still cover every pyramid of PyConvU-Net (one-group first unit, 4-level grouped pyramid, bottleneck,
biases, NCHW and channels_last, tiles that split groups). Where Triton is not installed, the kernel tests are skipped
with the reason and the tiling/indexing is still checked through :func:`pyconv_triton_reference`, which evaluates
the same tile tables with PyTorch convolutions. CUDA tests (skipped without a GPU) check bf16/fp16 autocast against
the float32 reference, a whole PyConvU-Net training step, and ``torch.compile``.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from pyconv_monai.networks import FastPyConv, PyConv, PyConvUNet, optimize_pyconv, pyconv_modes
from pyconv_monai.networks.blocks import pyconv_triton as pt
from tests.conftest import REPO
from tests.networks.grad_check import forward_backward, rel_err

CUDA = torch.cuda.is_available()
HAS_TRITON = pt.triton_available()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed (pip install triton)")
needs_cuda = pytest.mark.skipif(not (CUDA and HAS_TRITON), reason="needs a CUDA GPU and Triton")

# (PyConv kwargs, input spatial size): PyConvU-Net's pyramids, biases, a Cin not a multiple of the tile
BLOCKS = [
    ({"in_channels": 32, "out_channels": 64}, (6, 5)),
    ({"in_channels": 16, "out_channels": 16, "kernel_sizes": (3, 5, 7), "groups": (1, 4, 8)}, (5, 7)),
    ({"in_channels": 1, "out_channels": 16, "kernel_sizes": (3, 5, 7), "groups": (1, 1, 1)}, (6, 5)),
    ({"in_channels": 64, "out_channels": 64, "kernel_sizes": (3, 5), "groups": (1, 4)}, (3, 4)),
    ({"in_channels": 24, "out_channels": 48, "kernel_sizes": (3, 5, 7), "groups": (3, 6, 12), "bias": True}, (4, 5)),
]


@pytest.fixture
def interpret(monkeypatch):
    """Triton's interpreter for CPU tensors."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


# ---------------------------------------------------------------------------------- tables (no Triton needed)


@pytest.mark.parametrize("kwargs,size", BLOCKS)
def test_tile_tables_cover_every_weight_once(kwargs, size):
    ref = PyConv(2, **kwargs)
    spec = tuple(pt._spec(ref.levels[0].in_channels, ref.kernel_sizes, ref.groups, ref.level_channels))
    tables = pt.tile_tables(spec, pt.TRITON_BLOCKS["N"], pt.TRITON_BLOCKS["K"])
    assert tables["numel"] == sum(level.weight.numel() for level in ref.levels)
    assert tables["cout"] == sum(ref.level_channels)
    # forward rows: every (level, output channel) once; weight-gradient rows split them by reduction channels
    covered = sorted((r[4] + c) for r in tables["fwd"] for c in range(r[3], min(r[3] + pt.TRITON_BLOCKS["N"], r[6])))
    assert covered == list(range(tables["cout"]))
    dw_reduction = sum(r[8] - r[7] for r in tables["dw"])
    assert dw_reduction == sum(r[8] - r[7] for r in tables["fwd"])
    assert len(tables["dx"]) % tables["nlev"] == 0


@pytest.mark.parametrize("kwargs,size", BLOCKS)
def test_reference_tiling_equals_pyconv(kwargs, size):
    """The tile tables and block-diagonal masks (as the kernels index them) give the PyConv and its gradients."""
    torch.manual_seed(0)
    kwargs = {**kwargs, "bias": False}
    ref = PyConv(2, **kwargs).double()
    x = torch.randn(2, kwargs["in_channels"], *size, dtype=torch.float64)
    y_ref, g, grads = forward_backward(ref, x)
    g = g.double()
    tiles = pt.pyconv_triton_reference(x, [level.weight.detach() for level in ref.levels], ref.groups)
    assert rel_err(tiles["y"], y_ref) < 1e-12
    assert rel_err(tiles["dx"](g), grads["input"]) < 1e-12
    flat = torch.cat([grads[f"levels.{i}.weight"].reshape(-1) for i in range(len(ref.levels))])
    assert rel_err(tiles["dw"](g), flat) < 1e-12


def test_unsupported_pyconvs_and_missing_runtime(monkeypatch):
    assert not pt.triton_supported(PyConv(3, 16, 16, (3, 5), (1, 4)))
    assert not pt.triton_supported(PyConv(2, 16, 16, (3, 5), (1, 4), strides=2))
    assert pt.triton_supported(PyConv(2, 16, 16, (3, 5), (1, 4)))
    net = PyConvUNet(spatial_dims=3, features=(16, 32), stage_levels=(2, 2))
    if HAS_TRITON:
        optimize_pyconv(net, "triton")  # 3D: every PyConv stays the reference
        assert set(pyconv_modes(net).values()) == {"reference"}
        with pytest.raises(ValueError, match="2D stride-1"):
            pt.TritonPyConv(PyConv(3, 16, 16, (3, 5), (1, 4)))
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        fast = pt.TritonPyConv(PyConv(2, 16, 16, (3, 5), (1, 4)))
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            fast(torch.randn(1, 16, 4, 4))
    monkeypatch.setattr(pt, "triton", None)
    with pytest.raises(ImportError, match="triton"):
        pt.TritonPyConv(PyConv(2, 16, 16, (3, 5), (1, 4)))


def test_block_settings_are_validated_and_restored():
    saved = dict(pt.TRITON_BLOCKS)
    try:
        assert pt.set_triton_blocks("M=64, N=32")["M"] == 64 and pt.TRITON_BLOCKS["N"] == 32
        assert pt.set_triton_blocks({"warps": 8})["warps"] == 8
        for bad in ("M=48", "Q=16", "M", {"K": 8}):
            with pytest.raises(ValueError):
                pt.set_triton_blocks(bad)
    finally:
        pt.TRITON_BLOCKS.clear()
        pt.TRITON_BLOCKS.update(saved)


# ------------------------------------------------------------------------------- kernels in the interpreter


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kwargs,size", BLOCKS)
def test_kernels_equal_reference_float32(kwargs, size, channels_last, interpret):
    torch.manual_seed(1)
    ref = PyConv(2, **kwargs)
    fast = pt.TritonPyConv(ref)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, kwargs["in_channels"], *size).contiguous(memory_format=fmt)
    y_ref, g, grads_ref = forward_backward(ref, x)
    y, _, grads = forward_backward(fast, x, g)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert rel_err(y, y_ref) < 1e-5
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-5, name
    if channels_last or kwargs["in_channels"] == 1:
        assert y.is_contiguous(memory_format=torch.channels_last)


@needs_triton
def test_triton_mode_in_a_network_state_dict_and_flops(interpret):
    torch.manual_seed(2)
    ref = PyConvUNet(features=(16, 32), stage_levels=(3, 4))
    fast = optimize_pyconv(copy.deepcopy(ref), "triton")
    assert set(pyconv_modes(fast).values()) == {"triton"}
    assert all(isinstance(m, FastPyConv) for n, m in fast.named_modules() if n.endswith(".conv"))
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.rand(1, 1, 8, 6)
    y_ref, g, grads_ref = forward_backward(ref.eval(), x)
    y, _, grads = forward_backward(fast.eval(), x, g)
    assert rel_err(y, y_ref) < 1e-5
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-5, name
    # the FLOP counter sees the reference's multiply-adds through the custom operator's formula
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as c_ref:
        ref(x)
    with torch.no_grad(), FlopCounterMode(display=False) as c_fast:
        fast(x)
    assert c_fast.get_total_flops() == c_ref.get_total_flops()
    back = optimize_pyconv(fast, "reference")
    assert set(pyconv_modes(back).values()) == {"reference"}


# ------------------------------------------------------------------------------------------------- CUDA
# (ordered so that a run stopped at its time limit on the lent GPU has the most telling results first)


@needs_cuda
def test_cuda_triton_float32_equals_reference():
    torch.manual_seed(4)
    ref = PyConv(2, 32, 64).cuda()
    x = torch.randn(2, 32, 33, 40, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.backends.cudnn.flags(allow_tf32=False):
        y_ref, g, grads_ref = forward_backward(ref, x)
    y, _, grads = forward_backward(pt.TritonPyConv(ref), x, g)
    assert rel_err(y, y_ref) < 1e-5
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-5, name


@needs_cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_triton_pyconvunet_train_step_matches_reference(compiled):
    """A whole PyConvU-Net in float32 (IEEE products, no TF32), eager and compiled: the kernels inside the network.

    Whole-network gradients are compared in float32: under bf16 autocast the reference itself lands up to 0.6 away
    from its float32 gradients here (train-mode batch norm over small maps, measured on the CPU), so bf16 is checked
    per block (below) and on the network's output only.
    """
    torch.manual_seed(5)
    ref = PyConvUNet(out_channels=2).cuda().to(memory_format=torch.channels_last)
    fast = optimize_pyconv(copy.deepcopy(ref), "triton")
    if compiled:
        fast = torch.compile(fast)
    x = torch.rand(2, 1, 96, 80, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.backends.cudnn.flags(allow_tf32=False):
        y_ref, g, grads_ref = forward_backward(ref, x)
    y, _, grads = forward_backward(fast, x, g)
    # each block agrees to 1e-5 (test above); through ~20 blocks with train-mode batch norm over maps down to 6x5
    # the summation-order differences grow: the output's relative error was 3.5e-4 on an H200 (2026-11-28, eager)
    assert rel_err(y, y_ref) < 1e-3
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-3, name
    with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
        y16 = fast(x)
    assert y16.dtype == torch.bfloat16 and rel_err(y16, y_ref) < 6e-2


# every block in bf16 channels_last; fp16 and NCHW on the default pyramid and the biased one
AUTOCAST_CASES = [(b[0], torch.bfloat16, True) for b in BLOCKS] + [
    (BLOCKS[0][0], torch.bfloat16, False),
    (BLOCKS[0][0], torch.float16, True),
    (BLOCKS[4][0], torch.float16, False),
]


@needs_cuda
@pytest.mark.parametrize("kwargs,dtype,channels_last", AUTOCAST_CASES)
def test_cuda_triton_autocast_matches_float32_reference(kwargs, dtype, channels_last):
    torch.manual_seed(3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref = PyConv(2, **kwargs).cuda()
    fast = pt.TritonPyConv(ref)
    x = torch.randn(4, kwargs["in_channels"], 67, 45, device="cuda").contiguous(memory_format=fmt)
    with torch.backends.cudnn.flags(allow_tf32=False):
        y_ref, g, grads_ref = forward_backward(ref, x)
    with torch.autocast("cuda", dtype=dtype):
        y, _, grads = forward_backward(fast, x, g)
    assert y.dtype == dtype
    assert rel_err(y, y_ref) < 2e-2
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 2e-2, name


def test_networks_import_and_optimize_without_triton():
    """Triton is an optional dependency: without it the networks import, and only the 'triton' mode says so."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "from pyconv_monai.networks import PyConvUNet, optimize_pyconv, pyconv_modes\n"
        "net = optimize_pyconv(PyConvUNet(features=(16, 32), stage_levels=(3, 4)), 'dense')\n"
        "assert set(pyconv_modes(net).values()) == {'dense'}\n"
        "try:\n"
        "    optimize_pyconv(net, 'triton')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mode 'triton' needs the triton package, which is not installed" in done.stdout
