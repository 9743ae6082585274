import pytest
import torch
import torch.nn.functional as F
from pyconv_monai.networks import FCN8s, PyConvUNet, ValidUNet, get_network, list_networks
from pyconv_monai.networks.nets.wrappers import crop_to, pad_to_multiple, pad_to_size


@pytest.mark.parametrize("size", [(64, 64), (67, 45), (33, 100), (16, 17)])
def test_pyconvunet_2d_keeps_any_size(size):
    net = PyConvUNet(spatial_dims=2, in_channels=1, out_channels=3).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 1, *size))
    assert y.shape == (2, 3, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(16, 16, 16), (17, 20, 19)])
def test_pyconvunet_3d_keeps_any_size(size):
    net = PyConvUNet(spatial_dims=3, in_channels=2, out_channels=2, features=(16, 32, 64), stage_levels=(3, 4, 4))
    net.eval()
    with torch.no_grad():
        y = net(torch.rand(1, 2, *size))
    assert y.shape == (1, 2, *size)


def test_pyconvunet_default_3d_network_runs():
    net = PyConvUNet(spatial_dims=3).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 16, 18, 17)).shape == (1, 1, 16, 18, 17)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spatial_dims": 1}, "spatial_dims 2 or 3"),
        ({"features": (16,), "stage_levels": (3,)}, "at least two stages"),
        ({"stage_levels": (3, 4, 4)}, "one pyramid level count per stage"),
        ({"features": (16, 24, 64, 128, 256)}, "PyConv level with kernel"),  # 24 channels: 16 groups do not fit
        ({"stage_levels": (4, 4, 4, 3, 2)}, r"stage 0 \(16 features, 4 levels\).*divisible by 4"),
        ({"stage_levels": (3, 4, 4, 3, 5)}, "num_levels must be between 1 and 4"),
        ({"in_channels": 0}, "must be positive"),
    ],
)
def test_pyconvunet_bad_configurations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PyConvUNet(**kwargs)


@pytest.mark.parametrize("name", list_networks())
def test_gradient_reaches_every_parameter(name):
    net = get_network(name, spatial_dims=2, in_channels=1, out_channels=2)
    size = net.valid_input_size(min_output=8) if isinstance(net, ValidUNet) else 64
    x = torch.rand(2, 1, size, size)
    net(x).square().mean().backward()
    # a convolution's bias that a batch norm follows gets a gradient of exactly zero in exact arithmetic (the norm
    # subtracts the mean it adds), so only its presence is checked; rounding made such a test pass or fail by chance
    norm = torch.nn.modules.batchnorm._BatchNorm
    before_norm = set()
    for m_name, m in net.named_modules():
        if hasattr(m, "conv") and hasattr(m, "adn") and any(isinstance(c, norm) for c in m.adn.children()):
            before_norm.add(f"{m_name}.conv.bias")  # a MONAI Convolution with its own batch norm
        if isinstance(m, torch.nn.Sequential):
            kids = list(m.named_children())
            for (k, child), (_, nxt) in zip(kids, kids[1:]):
                if isinstance(nxt, norm):  # a convolution, then a batch norm
                    before_norm.add(f"{m_name}.{k}.conv.bias" if hasattr(child, "conv") else f"{m_name}.{k}.bias")
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    zero = [n for n, p in net.named_parameters() if p.grad is not None and n not in before_norm and not p.grad.any()]
    assert not missing and not zero, f"{name}: no gradient for {missing + zero}"


@pytest.mark.parametrize("name", [n for n in list_networks() if n != "unet_valid"])
@pytest.mark.parametrize("size", [(64, 64), (67, 45)])
def test_every_registered_network_returns_one_tensor_of_input_size(name, size):
    net = get_network(name, out_channels=2).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 2, *size)


@pytest.mark.parametrize("name", ["pyconvunet", "unet", "unetplusplus", "attention_unet", "resnet34_unet", "fcn8s"])
def test_every_network_has_a_3d_variant(name):
    kwargs = {"features": (16, 32, 64), "stage_levels": (3, 4, 4)} if name == "pyconvunet" else {}
    net = get_network(name, spatial_dims=3, in_channels=1, out_channels=2, **kwargs).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


def test_registry_overrides_and_errors():
    net = get_network("PyConvUNet", features=(16, 32, 64), stage_levels=(3, 4, 4))
    assert isinstance(net, PyConvUNet) and net.features == (16, 32, 64)
    assert isinstance(get_network("fcn-8s".replace("-", "")), FCN8s)
    with pytest.raises(ValueError, match="unknown network 'segnet'"):
        get_network("segnet")


def test_valid_unet_sizes_match_the_paper():
    net = ValidUNet()
    assert net.output_size(572) == 388  # Ronneberger et al., Fig. 1
    assert net.valid_input_size(min_output=388) == 572
    with pytest.raises(ValueError, match="next valid size is 572"):
        net.output_size(570)
    small = ValidUNet(spatial_dims=3, features=(8, 16, 32)).eval()
    n = small.valid_input_size(min_output=4)
    with torch.no_grad():
        y = small(torch.rand(1, 1, n, n, n))
    assert y.shape == (1, 2, *[small.output_size(n)] * 3)


def test_fcn8s_uses_pool3_and_pool4_skips():
    net = FCN8s(out_channels=1).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        y = net(x)
        net.encoder[2][-1].register_forward_hook(lambda m, i, o: torch.zeros_like(o))  # silence pool3
        y_without_pool3 = net(x)
    assert y.shape == (1, 1, 64, 64) and not torch.allclose(y, y_without_pool3)


def test_pyconvunet_learns_on_a_real_em_slice(em_stack):
    images, labels = em_stack
    x = torch.as_tensor(images[0, 192:256, 192:256], dtype=torch.float32)[None, None] / 255.0
    y = torch.as_tensor(labels[0, 192:256, 192:256] > 0, dtype=torch.float32)[None, None]
    x = torch.cat([x, x.flip(-1)])
    y = torch.cat([y, y.flip(-1)])  # noqa: E702
    net = PyConvUNet(spatial_dims=2, in_channels=1, out_channels=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


def test_pad_to_size_and_multiple_replicate_the_end_border():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    y = pad_to_size(x, [3, 5])
    assert y.shape == (1, 1, 3, 5)
    assert torch.equal(y[..., :2, :3], x)  # the input stays at the start
    assert torch.equal(y[..., 2, :3], x[..., 1, :]) and torch.equal(y[..., :2, 4], x[..., :, 2])  # border copied
    assert pad_to_size(x, [2, 3]) is x
    assert pad_to_multiple(x, 4).shape == (1, 1, 4, 4) and pad_to_multiple(x, 1) is x
    assert torch.equal(crop_to(pad_to_multiple(x, 4), [2, 3]), x)
    scripted = torch.jit.script(pad_to_size)  # called inside the scriptable networks
    assert torch.equal(scripted(x, [3, 5]), y)
