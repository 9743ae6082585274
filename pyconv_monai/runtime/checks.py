# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""No silent wrong result from non-finite numbers: weights with NaN/Inf are refused, and so are NaN/Inf logits.

:func:`check_finite_weights` runs where a runtime gets the network (:func:`pyconv_monai.runtime.select_runtime`);
:func:`check_finite_logits` is for the inferer's output, before activation and threshold (a NaN logit thresholds to
background and would otherwise pass as an empty mask). Both raise :class:`NonFiniteError`, a ``ValueError``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["NonFiniteError", "check_finite_weights", "check_finite_logits"]


class NonFiniteError(ValueError):
    """Weights or network outputs hold NaN or Inf."""


def check_finite_weights(network: nn.Module, source: str | None = None) -> nn.Module:
    """Raise if any parameter or floating-point buffer of ``network`` holds NaN or Inf; return ``network``.

    Args:
        network: the network with its loaded weights.
        source: where the weights came from (e.g. the checkpoint path), for the message.

    Returns:
        ``network``, unchanged.

    Raises:
        NonFiniteError: naming the first tensors (up to 5) with NaN or Inf and how many values are not finite.
    """
    bad = []
    for name, t in network.state_dict().items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(f"{name} ({int((~torch.isfinite(t)).sum())} of {t.numel()} values)")
    if bad:
        where = f" loaded from {source}" if source else ""
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(f"the network's weights{where} hold NaN or Inf in {shown}: refusing to run them.")
    return network


def check_finite_logits(logits: torch.Tensor, case: str | None = None) -> torch.Tensor:
    """Raise if ``logits`` hold NaN or Inf (a network output before activation); return them unchanged.

    Usable as a step of a MONAI ``Compose`` on the ``pred`` tensor, e.g. in a bundle's postprocessing:
    ``{"_target_": "Lambdad", "keys": "pred", "func": "$pyconv_monai.runtime.check_finite_logits"}``.

    Args:
        logits: the network's output for one case (any shape).
        case: the case's name or file, for the message.

    Returns:
        ``logits``.

    Raises:
        NonFiniteError: with the number of NaN and of infinite values.
    """
    t = torch.as_tensor(logits)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        where = f" for {case}" if case else ""
        raise NonFiniteError(f"the network's output{where} holds {nan} NaN and {inf} infinite values of {t.numel()}: "
                             "the result would be wrong, so the case fails.")  # fmt: skip
    return logits
