import pytest
import torch
from pyconv_monai.networks import PyConv, PyConvNormAct, TwoPyConv
from pyconv_monai.networks.blocks import pyconv_level_channels


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_pyconv_levels_concatenate_to_out_channels(spatial_dims):
    conv = PyConv(spatial_dims, 32, 64)
    assert conv.level_channels == (8, 8, 16, 32)
    assert [m.kernel_size[0] for m in conv.levels] == [3, 5, 7, 9]
    assert [m.groups for m in conv.levels] == [1, 4, 8, 16]
    x = torch.rand(2, 32, *([11] * spatial_dims))
    assert conv(x).shape == (2, 64, *([11] * spatial_dims))


def test_pyconv_output_is_levels_in_order():
    conv = PyConv(2, 16, 16, kernel_sizes=(3, 5, 7), groups=(1, 4, 8))
    x = torch.rand(1, 16, 9, 9)
    expected = torch.cat([level(x) for level in conv.levels], dim=1)
    assert torch.equal(conv(x), expected)


def test_pyconv_single_level_is_plain_conv():
    conv = PyConv(2, 4, 6, kernel_sizes=(3,), groups=(1,))
    assert torch.equal(conv(torch.ones(1, 4, 5, 5)), conv.levels[0](torch.ones(1, 4, 5, 5)))


def test_pyconv_strides_downsample():
    conv = PyConv(2, 16, 16, kernel_sizes=(3, 5), groups=(1, 4), strides=2)
    assert conv(torch.rand(1, 16, 10, 10)).shape == (1, 16, 5, 5)


def test_level_channel_split():
    assert pyconv_level_channels(64, (1, 1, 2, 4)) == [8, 8, 16, 32]
    with pytest.raises(ValueError, match="cannot split 20 output channels"):
        pyconv_level_channels(20, (1, 1, 2, 4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"in_channels": 12, "out_channels": 64}, "divisible by 8"),  # 12 input channels, 8 groups
        ({"in_channels": 32, "out_channels": 16}, "divisible by 4"),  # 2 channels in the 4-group level
        ({"in_channels": 32, "out_channels": 20}, "cannot split"),
        ({"in_channels": 32, "out_channels": 24}, "divisible by 4"),  # 3 channels in the 4-group level
        ({"in_channels": 32, "out_channels": 64, "groups": (1, 4)}, "one group count per kernel size"),
        ({"in_channels": 32, "out_channels": 64, "kernel_sizes": (3, 4, 7, 9)}, "must be odd"),
        ({"in_channels": 32, "out_channels": 64, "splits": (1, 1)}, "2 splits for 4 levels"),
    ],
)
def test_bad_configurations_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PyConv(2, **kwargs)


def test_norm_act_unit_and_two_conv():
    unit = PyConvNormAct(2, 16, 32, num_levels=3)
    assert isinstance(unit.norm, torch.nn.BatchNorm2d)
    assert unit(torch.rand(2, 16, 8, 8)).min() >= 0  # ReLU output
    block = TwoPyConv(3, 1, 16, num_levels=3, first_groups=(1, 1, 1, 1))
    assert block(torch.rand(1, 1, 6, 7, 5)).shape == (1, 16, 6, 7, 5)
    with pytest.raises(ValueError, match="num_levels must be between 1 and 4"):
        PyConvNormAct(2, 16, 32, num_levels=5)
