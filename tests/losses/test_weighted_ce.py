"""Weighted cross-entropy: equals PyTorch's losses with unit weights, scales per pixel, trains with the weight map."""

import pytest
import torch
import torch.nn.functional as F
from pyconv_monai.losses import WeightedCrossEntropyLoss
from pyconv_monai.transforms import BorderWeightMapd


def test_unit_weights_equal_torch_losses():
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 1, 8, 8)).float()
    loss = WeightedCrossEntropyLoss()
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target[:, 0].long()))
    torch.testing.assert_close(
        loss(logits, target, torch.ones_like(target)), F.cross_entropy(logits, target[:, 0].long())
    )
    one_hot = F.one_hot(target[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(loss(logits, one_hot), F.cross_entropy(logits, target[:, 0].long()))
    binary = torch.randn(2, 1, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    torch.testing.assert_close(loss(binary, mask), F.binary_cross_entropy_with_logits(binary, mask))


def test_weights_scale_each_pixel():
    logits = torch.randn(1, 2, 4, 4)
    target = torch.randint(0, 2, (1, 1, 4, 4)).float()
    weight = torch.rand(1, 1, 4, 4) * 10
    per_pixel = F.cross_entropy(logits, target[:, 0].long(), reduction="none")[:, None]
    torch.testing.assert_close(WeightedCrossEntropyLoss(reduction="none")(logits, target, weight), per_pixel * weight)
    torch.testing.assert_close(
        WeightedCrossEntropyLoss(reduction="sum")(logits, target, weight), (per_pixel * weight).sum()
    )
    stacked = torch.cat([target, weight], dim=1)  # label and weight in one tensor, for MONAI trainers
    torch.testing.assert_close(
        WeightedCrossEntropyLoss(weight_in_target=True)(logits, stacked), (per_pixel * weight).mean()
    )


def test_shape_errors():
    loss = WeightedCrossEntropyLoss()
    with pytest.raises(ValueError, match="does not match input"):
        loss(torch.randn(1, 2, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="weight shape"):
        loss(torch.randn(1, 2, 4, 4), torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 3))
    with pytest.raises(ValueError, match="one output channel"):
        loss(torch.randn(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))


def test_gradient_with_the_border_weight_map(em_stack):
    label = torch.as_tensor(em_stack[1][:2, None, :64, :64] > 0, dtype=torch.float32)
    weight = torch.stack([BorderWeightMapd()({"label": lab})["weight"] for lab in label])
    logits = torch.zeros(2, 2, 64, 64, requires_grad=True)
    value = WeightedCrossEntropyLoss()(logits, label, weight)
    value.backward()
    assert value.item() == pytest.approx(float(weight.mean()) * torch.log(torch.tensor(2.0)).item(), rel=1e-5)
    # the gradient is largest where the weight is: in the gaps between cells
    grad = logits.grad.abs().sum(1, keepdim=True)
    assert float(grad[weight > 5].mean()) > 3 * float(grad[weight < 2].mean())
