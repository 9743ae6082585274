# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Choose the implementation of every pyramidal convolution of a network: by name, or by timing each candidate.

:func:`optimize_pyconv` swaps each :class:`PyConv` for a :class:`FastPyConv` plan (same parameters, same function);
:func:`autotune_pyconv` times the candidates on each PyConv's real input; :func:`pyconv_modes` reports the choice.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from monai.networks.utils import replace_modules
from pyconv_monai.networks.blocks.pyconv import PyConv
from pyconv_monai.networks.blocks.pyconv_fast import PYCONV_MODES, FastPyConv, pyconv_plan

__all__ = ["OPTIMIZE_MODES", "PyConvTiming", "optimize_pyconv", "autotune_pyconv", "pyconv_modes"]

# what optimize_pyconv accepts: the named plans and "auto" (the fastest plan of each PyConv, timed on the device)
OPTIMIZE_MODES: tuple[str, ...] = PYCONV_MODES + ("auto",)


@dataclass
class PyConvTiming:
    """What :func:`autotune_pyconv` measured for the PyConvs of one signature.

    Attributes:
        modules: names of the PyConv modules sharing this signature (input shape and configuration).
        input_shape: shape of their input.
        seconds: median seconds of one call (forward, and backward when tuned for training), by mode.
        choice: the fastest mode.
    """

    modules: list[str]
    input_shape: tuple[int, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    choice: str = "reference"


def _reference(m: nn.Module) -> PyConv:
    return m.reference if isinstance(m, FastPyConv) else m


def _replace(net: nn.Module, choose: Callable[[str, PyConv], nn.Module]) -> nn.Module:
    """Replace every PyConv / FastPyConv ``m`` of ``net`` by ``choose(name, reference of m)``, in ``m``'s mode.

    MONAI's ``replace_modules`` swaps each one by name; ``replace_modules_by_type`` is not used: it passes no name
    (which ``"auto"`` needs) and prints.
    """
    if isinstance(net, (PyConv, FastPyConv)):
        return choose("", _reference(net)).train(net.training)
    found = [(name, m) for name, m in net.named_modules() if isinstance(m, (PyConv, FastPyConv))]
    for name, m in found:  # the replacements hold the same parameters: no device to match
        replace_modules(net, name, choose(name, _reference(m)).train(m.training), match_device=False)
    return net


def _build(ref: PyConv, mode: str) -> nn.Module:
    return ref if mode == "reference" else FastPyConv(ref, mode)


def pyconv_modes(net: nn.Module) -> dict[str, str]:
    """The implementation of each PyConv of ``net``: ``{module name: mode}`` (``"reference"`` for a plain PyConv)."""
    return {
        name: (m.mode if isinstance(m, FastPyConv) else "reference")
        for name, m in net.named_modules()
        if isinstance(m, (PyConv, FastPyConv))
    }


def optimize_pyconv(
    net: nn.Module,
    mode: str = "dense",
    example_input: torch.Tensor | None = None,
    training: bool = True,
    candidates: Sequence[str] = PYCONV_MODES,
    warmup: int = 2,
    repeats: int = 5,
) -> nn.Module:
    """Compute every :class:`PyConv` of ``net`` with a fast implementation of the same function.

    The network is changed in place (each PyConv is replaced by a :class:`FastPyConv` holding the same
    parameters) and returned. Parameter objects, names and the ``state_dict`` are unchanged, so an optimizer
    built before still trains it, and checkpoints load into either form. ``mode="reference"`` restores the
    reference modules; a network without PyConvs is returned as it is, so a bundle config can wrap any registry
    network (see ``docs/performance.md``). Call it before ``torch.compile``. ``torch.jit.script`` (and so
    ``monai.bundle ckpt_export``) compiles the reference PyConvs in place of the fast ones.

    Args:
        net: a network containing PyConv modules (e.g. ``PyConvUNet``), or a PyConv.
        mode: ``"ungrouped"``, ``"dense"`` (see :func:`pyconv_plan`), ``"reference"``, or ``"auto"``: time each
            candidate on each PyConv's input (see :func:`autotune_pyconv`) and keep the fastest.
        example_input: a batch as the network will see it (device, dtype, memory format, batch size); needed for
            ``"auto"``. Call under the ``torch.autocast`` context that training or inference will use.
        training: for ``"auto"``: time forward and backward (True) or the forward alone (False).
        candidates: for ``"auto"``: the modes to try.
        warmup: for ``"auto"``: untimed calls per candidate (cuDNN's algorithm search happens here).
        repeats: for ``"auto"``: timed calls per candidate; the median counts.

    Returns:
        ``net`` (or, when ``net`` is itself a PyConv, its replacement).

    Raises:
        ValueError: for an unknown mode, or ``"auto"`` without ``example_input``.

    Example::

        net = optimize_pyconv(PyConvUNet().cuda().to(memory_format=torch.channels_last), "dense")
        net = torch.compile(net)

    Example (bundle config)::

        "network_def": {"_target_": "pyconv_monai.networks.optimize_pyconv", "mode": "@pyconv_impl",
                        "net": {"_target_": "pyconv_monai.networks.get_network", "name": "@network_name"}}
    """
    if mode not in OPTIMIZE_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(OPTIMIZE_MODES)}.")
    if mode != "auto":
        return _replace(net, lambda _name, ref: _build(ref, mode))
    if example_input is None:
        raise ValueError("optimize_pyconv(mode='auto') needs example_input to time each PyConv on.")
    timings = autotune_pyconv(net, example_input, training, candidates, warmup, repeats)
    choice = {name: t.choice for t in timings for name in t.modules}
    return _replace(net, lambda name, ref: _build(ref, choice.get(name, "reference")))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


@torch.no_grad()
def _capture_inputs(net: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[torch.Tensor, bool]]:
    """One forward pass (eval mode: batch-norm statistics untouched) recording each PyConv's input.

    Each module's own train/eval mode is restored afterwards. MONAI's ``eval_mode`` is not used: it restores
    ``train()`` on the whole network, which would switch on submodules kept in eval mode (e.g. a frozen batch norm).
    """
    seen: dict[str, tuple[torch.Tensor, bool]] = {}
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, (PyConv, FastPyConv)):

            def hook(_m, args, name=name):
                x = args[0]
                # the image itself needs no gradient: its PyConv's backward computes no input gradient
                seen.setdefault(name, (torch.empty_like(x), x is not example_input))

            hooks.append(m.register_forward_pre_hook(hook))
    modes = {m: m.training for m in net.modules()}
    try:
        net.eval()
        net(example_input)
    finally:
        for h in hooks:
            h.remove()
        for m, t in modes.items():
            m.train(t)
    return seen


def _time_call(module: nn.Module, x: torch.Tensor, training: bool, warmup: int, repeats: int) -> float:
    """Median seconds of ``module(x)`` (and its backward, without touching ``.grad``)."""
    params = [p for p in module.parameters() if p.requires_grad]
    grad_out = None
    times = []
    for i in range(warmup + repeats):
        _sync(x.device)
        t0 = time.perf_counter()
        with torch.set_grad_enabled(training):
            y = module(x)
            if training:
                if grad_out is None:
                    grad_out = torch.randn_like(y)
                inputs = ([x] if x.requires_grad else []) + params
                torch.autograd.grad(y, inputs, grad_out)
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def autotune_pyconv(
    net: nn.Module,
    example_input: torch.Tensor,
    training: bool = True,
    candidates: Sequence[str] = PYCONV_MODES,
    warmup: int = 2,
    repeats: int = 5,
) -> list[PyConvTiming]:
    """Time each candidate implementation of each PyConv of ``net`` on its real input shape; change nothing.

    One forward pass of ``example_input`` (in eval mode, without gradients) records the input of every PyConv;
    PyConvs with the same configuration and input are timed once, on fresh random inputs of that shape, dtype,
    device and memory format, under the caller's autocast state. The parameters' ``.grad`` and the batch-norm
    statistics are left as they were.

    Args:
        net: the network.
        example_input: a batch as the network will see it.
        training: time forward and backward (True) or the forward alone (False).
        candidates: the modes to try (see :data:`PYCONV_MODES`).
        warmup: untimed calls per candidate.
        repeats: timed calls per candidate (the median counts).

    Returns:
        one :class:`PyConvTiming` per signature, in the order the forward pass visits them.
    """
    unknown = [c for c in candidates if c not in PYCONV_MODES]
    if unknown or not candidates:
        raise ValueError(f"autotune candidates must be among {PYCONV_MODES}, got {tuple(candidates)}.")
    refs = {name: _reference(m) for name, m in net.named_modules() if isinstance(m, (PyConv, FastPyConv))}
    seen = _capture_inputs(net, example_input)
    groups: dict[tuple, PyConvTiming] = {}
    inputs: dict[tuple, tuple[torch.Tensor, bool]] = {}
    for name, (x, needs_grad) in seen.items():
        ref = refs[name]
        level = ref.levels[0]
        key = (
            tuple(x.shape),
            x.dtype,
            str(x.device),
            _memory_format(x),
            needs_grad,
            level.in_channels,
            ref.kernel_sizes,
            ref.groups,
            ref.level_channels,
            tuple(level.stride),
            level.bias is not None,
        )
        if key not in groups:
            groups[key] = PyConvTiming(modules=[], input_shape=tuple(x.shape))
            inputs[key] = (x, needs_grad)
        groups[key].modules.append(name)
    for key, timing in groups.items():
        like, needs_grad = inputs[key]
        ref = refs[timing.modules[0]]
        x = torch.randn(like.shape, dtype=like.dtype, device=like.device).contiguous(memory_format=key[3])
        x.requires_grad_(training and needs_grad)
        plans = {}  # a mode whose plan is another's for this PyConv (e.g. every mode when all groups are 1) is skipped
        for mode in candidates:
            plans.setdefault(pyconv_plan(ref.kernel_sizes, ref.groups, mode), mode)
        for mode in plans.values():
            timing.seconds[mode] = _time_call(_build(ref, mode), x, training, warmup, repeats)
        timing.choice = min(timing.seconds, key=timing.seconds.get)
    return list(groups.values())
