"""Comparing a fast implementation with its reference: relative error, and output plus every gradient of a module."""

from __future__ import annotations

import torch
import torch.nn as nn


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64 (NaN never passes a comparison with a tolerance)."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def forward_backward(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None = None):
    """Output, output gradient, and gradients w.r.t. the input and each named parameter, from a fresh graph.

    The output gradient is drawn in float32 and cast to the output's dtype, so a float32 reference and a bf16/fp16
    module given the same ``grad_out`` see the same values up to that rounding.
    """
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    if grad_out is None:
        grad_out = torch.randn_like(y, dtype=torch.float32)
    params = {n.removeprefix("_orig_mod."): p for n, p in module.named_parameters()}  # torch.compile's wrapper
    grads = torch.autograd.grad(y, [x, *params.values()], grad_out.to(y.dtype))
    return y.detach(), grad_out, {"input": grads[0], **dict(zip(params, grads[1:]))}
