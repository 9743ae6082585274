"""The fast PyConv implementations compute the reference function from the reference parameters.

CPU tests compare forward outputs and gradients (w.r.t. the input and every reference parameter) on fresh random
inputs in float64 (exact up to rounding) and float32; the CUDA tests (skipped, with the reason, without a GPU)
compare bf16/fp16 autocast, channels_last and ``torch.compile`` against a float32 reference.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyconv_monai.networks import (
    OPTIMIZE_MODES,
    FastPyConv,
    PyConv,
    PyConvUNet,
    autotune_pyconv,
    optimize_pyconv,
    pyconv_modes,
)
from pyconv_monai.networks.blocks import PYCONV_MODES, PyConvPart, plan_macs, pyconv_plan
from pyconv_monai.networks.blocks.pyconv_fast import expand_groups, pad_kernel

from benchmarks.table3 import count_macs
from tests.networks.grad_check import forward_backward, rel_err

FAST_MODES = [m for m in PYCONV_MODES if m != "reference"]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (reduced-precision, cuDNN and compiled fast paths)")

# (spatial_dims, PyConv kwargs, input spatial size): default pyramids, the first unit (one group everywhere),
# the bottleneck, stride 2 on odd sizes, and biases with groups that all exceed one
BLOCKS = [
    (2, {"in_channels": 32, "out_channels": 64}, (13, 10)),
    (2, {"in_channels": 16, "out_channels": 16, "kernel_sizes": (3, 5, 7), "groups": (1, 4, 8)}, (9, 11)),
    (2, {"in_channels": 1, "out_channels": 16, "kernel_sizes": (3, 5, 7), "groups": (1, 1, 1)}, (12, 7)),
    (2, {"in_channels": 64, "out_channels": 32, "kernel_sizes": (3, 5), "groups": (1, 4), "strides": 2}, (9, 12)),
    (2, {"in_channels": 32, "out_channels": 64, "groups": (2, 4, 8, 16), "bias": True}, (8, 9)),
    (1, {"in_channels": 32, "out_channels": 64, "bias": True, "strides": 2}, (15,)),
    (3, {"in_channels": 32, "out_channels": 64}, (5, 7, 6)),
    (
        3,
        {"in_channels": 16, "out_channels": 32, "kernel_sizes": (3, 5, 7), "groups": (1, 4, 8), "strides": 2},
        (7, 5, 6),
    ),
]


def assert_same_function(ref: nn.Module, fast: nn.Module, x: torch.Tensor, tol: float) -> None:
    y_ref, g_out, grads_ref = forward_backward(ref, x)
    y, _, grads = forward_backward(fast, x, g_out)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert rel_err(y, y_ref) < tol
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < tol, name


# ---------------------------------------------------------------------------------------------------- plans


def test_named_plans_of_the_default_pyramid():
    k, g = (3, 5, 7, 9), (1, 4, 8, 16)
    assert PYCONV_MODES == ("reference", "ungrouped", "dense")  # the plans that won a measurement somewhere
    assert pyconv_plan(k, g, "dense") == (PyConvPart((0, 1, 2, 3), 1, 9),)
    assert pyconv_plan(k, g, "reference") == tuple(PyConvPart((i,), g[i], k[i]) for i in range(4))
    assert pyconv_plan(k, g, "ungrouped") == tuple(PyConvPart((i,), 1, k[i]) for i in range(4))
    # one group everywhere (the first unit): dense is one convolution
    assert pyconv_plan((3, 5, 7), (1, 1, 1), "dense") == (PyConvPart((0, 1, 2), 1, 7),)
    for removed in ("fastest", "grouped", "split", "depthwise", "triton"):
        with pytest.raises(ValueError, match="unknown PyConv mode"):
            pyconv_plan(k, g, removed)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_block_diagonal_and_padded_weights_are_the_grouped_convolution(spatial_dims):
    conv_fn = (F.conv1d, F.conv2d, F.conv3d)[spatial_dims - 1]
    w = torch.randn(16, 4, *([5] * spatial_dims), dtype=torch.float64)  # 32 inputs, 8 groups
    x = torch.randn(2, 32, *([7] * spatial_dims), dtype=torch.float64)
    ref = conv_fn(x, w, padding=2, groups=8)
    for new_groups in (1, 2, 4, 8):
        w2 = pad_kernel(expand_groups(w, 8, new_groups), 2)
        assert w2.shape == (16, 32 // new_groups, *([9] * spatial_dims))
        assert torch.allclose(conv_fn(x, w2, padding=4, groups=new_groups), ref, rtol=1e-12, atol=1e-12)
    assert pad_kernel(w, 0) is w and expand_groups(w, 8, 8) is w
    with pytest.raises(ValueError, match="must divide"):
        expand_groups(w, 8, 3)


def test_macs_of_plans_are_what_the_flop_counter_counts():
    ref = PyConv(2, 32, 64)
    x_shape = (1, 32, 16, 16)
    args = (32, ref.level_channels, ref.groups)
    assert count_macs(ref, x_shape) == plan_macs(*args, pyconv_plan(ref.kernel_sizes, ref.groups, "reference")) * 256
    for mode in FAST_MODES:
        fast = FastPyConv(ref, mode)
        assert count_macs(fast, x_shape) == fast.macs_per_voxel() * 256
        assert fast.macs_per_voxel() == plan_macs(*args, fast.plan)
    # the arithmetic documented in docs/performance.md: 32 -> 64 channels, kernels 3/5/7/9, groups 1/4/8/16
    per_in = {m: plan_macs(*args, pyconv_plan(ref.kernel_sizes, ref.groups, m)) // 32 for m in PYCONV_MODES}
    assert per_in == {"reference": 382, "ungrouped": 3648, "dense": 5184}


# ------------------------------------------------------------------------------------ same function, CPU


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("spatial_dims, kwargs, size", BLOCKS)
def test_fast_block_equals_reference_float64(mode, spatial_dims, kwargs, size):
    ref = PyConv(spatial_dims, **kwargs).double()
    x = torch.randn(2, kwargs["in_channels"], *size, dtype=torch.float64)
    assert_same_function(ref, FastPyConv(ref, mode), x, tol=1e-12)


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("spatial_dims, kwargs, size", BLOCKS[:2] + BLOCKS[6:7])
def test_fast_block_equals_reference_float32(mode, spatial_dims, kwargs, size):
    ref = PyConv(spatial_dims, **kwargs)
    x = torch.randn(3, kwargs["in_channels"], *size)
    assert_same_function(ref, FastPyConv(ref, mode), x, tol=2e-5)


def test_custom_plan_and_bad_plans():
    ref = PyConv(2, 32, 64).double()
    x = torch.randn(1, 32, 9, 9, dtype=torch.float64)
    plan = [PyConvPart((3, 0), 1, 11), PyConvPart((2,), 4, 7), PyConvPart((1,), 2, 5)]
    fast = FastPyConv(ref, plan)
    assert fast.mode == "custom" and "conv(level_indices=[2], groups=4, kernel=7)" in repr(fast)
    assert_same_function(ref, fast, x, tol=1e-12)
    for bad, message in [
        ([PyConvPart((0, 1, 2), 1, 9)], "cover each of its 4 levels once"),
        ([PyConvPart((0, 1, 2, 3), 1, 7)], "cannot hold level 3"),
        ([PyConvPart((0, 1, 2, 3), 1, 10)], "cannot hold level 0"),
        ([PyConvPart((0,), 1, 3), PyConvPart((1, 2, 3), 8, 9)], r"cannot hold level 1 \(4 groups\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            FastPyConv(ref, bad)
    with pytest.raises(ValueError, match="PyConv itself"):
        FastPyConv(ref, "reference")
    with pytest.raises(TypeError, match="needs a PyConv"):
        FastPyConv(nn.Conv2d(2, 2, 3))


@pytest.mark.parametrize("mode", FAST_MODES)
def test_full_default_pyconvunet_equals_reference(mode):
    torch.manual_seed(1)
    ref = PyConvUNet(spatial_dims=2, in_channels=1, out_channels=2)
    fast = optimize_pyconv(copy.deepcopy(ref), mode)
    assert set(pyconv_modes(fast).values()) == {mode}
    x = torch.rand(2, 1, 37, 45)  # odd sizes: every pooling drops a row, every decoder pads one back
    assert_same_function(ref, fast, x, tol=1e-4)
    ref.eval(), fast.eval()
    with torch.no_grad():
        assert rel_err(fast(x), ref(x)) < 1e-5


@pytest.mark.parametrize("mode", FAST_MODES)
def test_3d_pyconvunet_equals_reference(mode):
    ref = PyConvUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(16, 32, 64), stage_levels=(3, 4, 4))
    ref = ref.double()
    fast = optimize_pyconv(copy.deepcopy(ref), mode)
    assert_same_function(ref, fast, torch.rand(1, 1, 11, 9, 10, dtype=torch.float64), tol=1e-10)


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_channels_last_in_channels_last_out(mode, spatial_dims):
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    ref = PyConv(spatial_dims, 32, 64).to(memory_format=fmt)
    x = torch.randn(2, 32, *([7] * spatial_dims)).contiguous(memory_format=fmt)
    y = FastPyConv(ref, mode)(x)
    assert y.is_contiguous(memory_format=fmt)
    assert rel_err(y, ref(x)) < 2e-5


# ------------------------------------------------------------------------ parameters and state_dict layout


@pytest.mark.parametrize("mode", FAST_MODES)
def test_state_dict_round_trip_between_layouts(mode):
    ref = PyConvUNet()
    params_before = [id(p) for p in ref.parameters()]
    keys = list(ref.state_dict())
    fast = optimize_pyconv(copy.deepcopy(ref), mode)
    assert list(fast.state_dict()) == keys
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]

    trained = PyConvUNet()  # other weights, saved from the reference layout, load into the fast one
    fast.load_state_dict(trained.state_dict())
    optimize_pyconv(trained, mode)
    x = torch.rand(1, 1, 32, 32)
    for net in (fast, trained, ref):
        net.eval()
    with torch.no_grad():
        assert torch.equal(fast(x), trained(x))
        ref.load_state_dict(fast.state_dict())  # and back: fast layout into a reference network
        assert rel_err(ref(x), fast(x)) < 1e-5

    # in place, same parameter objects: an optimizer built before keeps training the network; and back
    same = optimize_pyconv(ref, mode)
    assert same is ref and [id(p) for p in ref.parameters()] == params_before
    assert not same.encoder[1].unit1.conv.training  # eval mode carried over
    optimize_pyconv(ref, "reference")
    assert type(ref.encoder[1].unit1.conv) is PyConv and [id(p) for p in ref.parameters()] == params_before
    assert not ref.encoder[1].unit1.conv.training


def test_fast_module_shares_and_deep_copies_the_reference():
    ref = PyConv(2, 32, 64)
    fast = FastPyConv(ref, "dense")
    assert fast.levels is ref.levels and fast.reference is ref
    assert FastPyConv(fast, "ungrouped").reference is ref  # a fast module converts through its reference
    dup = copy.deepcopy(fast)
    assert dup.levels is dup.reference.levels and dup.levels is not ref.levels
    assert optimize_pyconv(fast, "reference") is ref


def test_a_step_through_the_fast_path_trains_the_reference_parameters():
    torch.manual_seed(2)
    ref = PyConvUNet(features=(16, 32, 64), stage_levels=(3, 4, 4))
    fast = optimize_pyconv(copy.deepcopy(ref), "dense")
    x, target = torch.rand(2, 1, 24, 24), (torch.rand(2, 1, 24, 24) > 0.5).float()
    for net in (ref, fast):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        F.binary_cross_entropy_with_logits(net(x), target).backward()
        opt.step()
    for (n, a), (_, b) in zip(ref.state_dict().items(), fast.state_dict().items()):
        assert rel_err(b, a) < 1e-4 if a.is_floating_point() else torch.equal(a, b), n


# ----------------------------------------------------------------------------------------------- autotune


def test_auto_mode_times_each_signature_and_changes_nothing_else():
    net = PyConvUNet(features=(16, 32, 64), stage_levels=(3, 4, 4))
    with torch.no_grad():  # non-trivial batch-norm statistics, to see that autotuning leaves them alone
        net(torch.rand(2, 1, 24, 24) * 3)
    ref = copy.deepcopy(net)
    x = torch.rand(2, 1, 24, 24)
    timings = autotune_pyconv(net, x, training=True, warmup=1, repeats=1)
    names = [n for t in timings for n in t.modules]
    assert sorted(names) == sorted(pyconv_modes(net))
    assert "decoder.0.unit1.conv" in next(t.modules for t in timings if "encoder.1.unit1.conv" in t.modules)
    first = next(t for t in timings if "encoder.0.unit0.conv" in t.modules)
    assert set(first.seconds) == {"reference", "dense"}  # one group everywhere: the fast modes coincide
    assert all(t.choice in t.seconds and t.choice == min(t.seconds, key=t.seconds.get) for t in timings)
    assert all(p.grad is None for p in net.parameters())
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)
    assert net.training

    optimize_pyconv(net, "auto", example_input=x, training=False, candidates=("dense", "ungrouped"), repeats=1)
    assert set(pyconv_modes(net).values()) <= {"dense", "ungrouped"}
    assert_same_function(ref, net, torch.rand(2, 1, 24, 24), tol=1e-4)
    with pytest.raises(ValueError, match="needs example_input"):
        optimize_pyconv(net, "auto")
    with pytest.raises(ValueError, match="unknown mode"):
        optimize_pyconv(net, "turbo")
    with pytest.raises(ValueError, match="candidates must be among"):
        autotune_pyconv(net, x, candidates=("auto",))
    assert "auto" in OPTIMIZE_MODES


def test_autotune_restores_each_modules_own_mode():
    """A submodule kept in eval mode (a frozen batch norm) in a training network stays so (unlike MONAI's eval_mode)."""
    net = PyConvUNet(features=(16, 32), stage_levels=(3, 4))
    net.encoder[0].unit0.norm.eval()
    net.decoder.eval()
    optimize_pyconv(net, "auto", example_input=torch.rand(1, 1, 16, 16), candidates=("dense",), warmup=0, repeats=1)
    assert net.training and net.encoder[1].training and net.encoder[0].unit1.norm.training
    assert not net.encoder[0].unit0.norm.training
    assert not any(m.training for m in net.decoder.modules())
    assert pyconv_modes(net)["decoder.0.unit0.conv"] == "dense" and not net.decoder[0].unit0.conv.training


@pytest.mark.parametrize("mode", FAST_MODES)
def test_fast_block_compiles_without_graph_breaks(mode):
    ref = PyConv(2, 32, 64)
    compiled = torch.compile(FastPyConv(ref, mode), backend="aot_eager", fullgraph=True)
    assert_same_function(ref, compiled, torch.randn(2, 32, 9, 9), tol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ungrouped"])  # the views and concatenation (dense is one convolution)
def test_fast_block_compiles_with_inductor(mode):
    ref = PyConv(2, 32, 64)
    compiled = torch.compile(FastPyConv(ref, mode), fullgraph=True)  # about 30 s per mode on a 2-core CPU
    assert_same_function(ref, compiled, torch.randn(2, 32, 9, 9), tol=2e-5)


# ------------------------------------------------------------------------------------ export, bundle configs


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # PyConvUNet's size check, constant when traced
@pytest.mark.parametrize("mode", FAST_MODES)
def test_trace_keeps_the_fast_path_and_script_the_reference(mode):
    ref = PyConvUNet(features=(16, 32, 64), stage_levels=(3, 4, 4)).eval()
    fast = optimize_pyconv(copy.deepcopy(ref), mode)
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        expected = ref(x)
        traced = torch.jit.trace(fast, x)
        assert rel_err(traced(x), expected) < 1e-5
        if mode == "dense":  # the trace holds the plan's convolutions, not the reference's
            n_ref, n_fast = (str(torch.jit.trace(m, x).inlined_graph).count("aten::_convolution") for m in (ref, fast))
            assert n_fast < n_ref
        scripted = torch.jit.script(copy.deepcopy(fast))  # FastPyConv.__prepare_scriptable__: the reference
        assert rel_err(scripted(x), expected) < 1e-6
        assert set(pyconv_modes(fast).values()) == {mode}  # scripting a copy leaves this network fast


def test_bundle_config_switch_and_ckpt_export(tmp_path):
    from monai.bundle import ConfigParser, ckpt_export

    # the switch in a bundle: a "pyconv_impl" key, the registry network wrapped in optimize_pyconv (which leaves
    # networks without PyConvs, such as "unet", as they are)
    config = {
        "network_name": "pyconvunet",
        "pyconv_impl": "ungrouped",
        "network_def": {
            "_target_": "pyconv_monai.networks.optimize_pyconv",
            "mode": "@pyconv_impl",
            "net": {
                "_target_": "pyconv_monai.networks.get_network",
                "name": "@network_name",
                "features": [16, 32, 64],
                "stage_levels": [3, 4, 4],
            },
        },
    }
    (tmp_path / "inference.json").write_text(json.dumps(config))
    net = ConfigParser(config).get_parsed_content("network_def")
    assert set(pyconv_modes(net).values()) == {"ungrouped"}
    with torch.no_grad():  # non-trivial batch-norm statistics
        net(torch.rand(2, 1, 32, 32) * 3 + 1)
    net.eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    reference = PyConvUNet(features=(16, 32, 64), stage_levels=(3, 4, 4)).eval()
    reference.load_state_dict(torch.load(tmp_path / "model.pt"))  # the checkpoint has the reference layout

    ts = tmp_path / "model.ts"  # ckpt_export scripts the network: the reference PyConvs, the same function
    ckpt_export("network_def", str(ts), str(tmp_path / "model.pt"), config_file=str(tmp_path / "inference.json"))
    exported = torch.jit.load(str(ts))
    x = torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        assert rel_err(exported(x), reference(x)) < 1e-6
        assert rel_err(net(x), reference(x)) < 1e-5

    config["network_name"] = "unet"
    del config["network_def"]["net"]["features"], config["network_def"]["net"]["stage_levels"]
    unet = ConfigParser(config).get_parsed_content("network_def")
    assert type(unet).__name__ == "BasicUNet" and not pyconv_modes(unet)


# ------------------------------------------------------------------------------------------------ CUDA only


@pytest.fixture
def cudnn_flags():
    """Restore cuDNN's flags after a test that sets them."""
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32
    yield torch.backends.cudnn
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", FAST_MODES)
def test_cuda_autocast_block_matches_float32_reference(mode, dtype, channels_last, cudnn_flags):
    cudnn_flags.benchmark = True
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref = PyConv(2, 32, 64).cuda().to(memory_format=fmt)
    fast = FastPyConv(ref, mode)
    x = torch.randn(4, 32, 67, 45, device="cuda").contiguous(memory_format=fmt)
    y_ref, g_out, grads_ref = forward_backward(ref, x)  # float32 (cuDNN may use TF32: about 1e-3)
    with torch.autocast("cuda", dtype=dtype):
        y, _, grads = forward_backward(fast, x, g_out)
    assert y.dtype == dtype
    assert rel_err(y, y_ref) < 2e-2
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 2e-2, name


@needs_cuda
@pytest.mark.parametrize("mode", FAST_MODES)
def test_cuda_float32_block_equals_reference(mode, cudnn_flags):
    cudnn_flags.allow_tf32 = False
    ref = PyConv(3, 32, 64).cuda()
    assert_same_function(ref, FastPyConv(ref, mode), torch.randn(2, 32, 9, 10, 11, device="cuda"), tol=1e-5)


@needs_cuda
@pytest.mark.parametrize("mode", ["ungrouped", "dense"])  # inductor compiles take tens of seconds each
def test_cuda_compiled_pyconvunet_train_step_matches_reference(mode, cudnn_flags):
    # float32 without TF32: under bf16 autocast the reference network's own gradients land up to 0.4 from its
    # float32 ones here (train-mode batch norm; measured on the CPU), so bf16 is checked per block (above)
    cudnn_flags.benchmark, cudnn_flags.allow_tf32 = True, False
    # three stages (all pyramid shapes of the default network but the bottleneck's) keep the compile short
    ref = PyConvUNet(out_channels=2, features=(16, 32, 64), stage_levels=(3, 4, 4)).cuda()
    ref = ref.to(memory_format=torch.channels_last)
    fast = torch.compile(optimize_pyconv(copy.deepcopy(ref), mode))
    x = torch.rand(4, 1, 96, 80, device="cuda").contiguous(memory_format=torch.channels_last)
    y_ref, g_out, grads_ref = forward_backward(ref, x)
    y, _, grads = forward_backward(fast, x, g_out)
    assert rel_err(y, y_ref) < 1e-4
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-4, name


@needs_cuda
def test_cuda_auto_mode_under_autocast_equals_reference(cudnn_flags):
    # tuned under autocast (what the choice depends on), compared in float32 without TF32 (every plan is exact)
    cudnn_flags.benchmark, cudnn_flags.allow_tf32 = True, False
    ref = PyConvUNet().cuda().to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 128, 128, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fast = optimize_pyconv(copy.deepcopy(ref), "auto", example_input=x)
    y, g_out, grads = forward_backward(fast, x)
    y_ref, _, grads_ref = forward_backward(ref, x, g_out)
    assert rel_err(y, y_ref) < 1e-4
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-4, name
