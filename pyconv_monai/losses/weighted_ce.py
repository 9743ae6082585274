# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Pixel-wise weighted cross-entropy (U-Net, Ronneberger et al. 2015, eq. 1) for the border weight map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["WeightedCrossEntropyLoss"]


class WeightedCrossEntropyLoss(_Loss):
    """Cross-entropy weighted per pixel: ``sum_x w(x) * CE(x)`` averaged (``"mean"``) or summed over pixels.

    With one output channel the loss is the binary cross-entropy of the logits (sigmoid); with ``C > 1`` channels it
    is the softmax cross-entropy against class indices. The weights are typically
    :class:`pyconv_monai.transforms.BorderWeightMapd`'s map.

    MONAI's trainers call ``loss(pred, label)`` with two arguments; to use the weight map there, concatenate it as the
    last channel of the label (``ConcatItemsd(keys=["label", "weight"], name="label")``) and set
    ``weight_in_target=True``.

    Args:
        weight_in_target: when no ``weight`` is passed, take it from the last channel of ``target``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-pixel loss ``(B, 1, *spatial)``).

    Example::

        loss = WeightedCrossEntropyLoss()
        value = loss(logits, label, weight)  # logits (B, C, H, W); label and weight (B, 1, H, W)
    """

    def __init__(self, weight_in_target: bool = False, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.weight_in_target = weight_in_target

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input: logits ``(B, C, *spatial)``.
            target: ``(B, 1, *spatial)`` class indices (``{0, 1}`` for ``C == 1``), or one-hot ``(B, C, *spatial)``
                for ``C > 1``; with ``weight_in_target`` one more channel holding the weights.
            weight: per-pixel weights ``(B, 1, *spatial)``; ``None`` for 1 everywhere (unless ``weight_in_target``).

        Raises:
            ValueError: shapes that do not match.
        """
        if weight is None and self.weight_in_target:
            target, weight = target[:, :-1], target[:, -1:]
        c = input.shape[1]
        if target.shape[2:] != input.shape[2:] or target.shape[0] != input.shape[0]:
            raise ValueError(f"target shape {tuple(target.shape)} does not match input {tuple(input.shape)}.")
        if c == 1:
            if target.shape[1] != 1:
                raise ValueError(f"one output channel needs a (B, 1, ...) target, got {tuple(target.shape)}.")
            loss = F.binary_cross_entropy_with_logits(input, target.to(input.dtype), reduction="none")
        else:
            if target.shape[1] == c and c > 1:
                indices = target.argmax(dim=1)
            elif target.shape[1] == 1:
                indices = target[:, 0].long()
            else:
                raise ValueError(f"target with {target.shape[1]} channels for {c} output channels.")
            loss = F.cross_entropy(input, indices, reduction="none").unsqueeze(1)
        if weight is not None:
            if weight.shape[0] != input.shape[0] or weight.shape[2:] != input.shape[2:] or weight.shape[1] != 1:
                raise ValueError(f"weight shape {tuple(weight.shape)} does not match input {tuple(input.shape)}.")
            loss = loss * weight.to(loss.dtype)
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss
