import numpy as np
import pytest
import torch
from pyconv_monai.inferers import OverlapTileInferer, mirror_pad
from pyconv_monai.networks import ValidUNet


@pytest.mark.parametrize("pads", [[(3, 2)], [(9, 14)], [(0, 11)]])
def test_mirror_pad_matches_numpy_reflect(pads):
    x = np.random.rand(1, 2, 5)
    expected = np.pad(x, [(0, 0), (0, 0), *pads], mode="reflect")
    np.testing.assert_allclose(mirror_pad(torch.as_tensor(x), pads).numpy(), expected)


def test_mirror_pad_3d_and_single_element():
    x = torch.rand(1, 1, 4, 3, 1)
    pads = [(2, 5), (1, 1), (3, 0)]
    y = mirror_pad(x, pads)
    np.testing.assert_allclose(y.numpy(), np.pad(x.numpy(), [(0, 0), (0, 0), *pads], mode="reflect"))
    assert y.shape == (1, 1, 11, 5, 4)


@pytest.fixture(scope="module")
def small_valid_unet():
    torch.manual_seed(0)
    return ValidUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(8, 16, 32)).eval()


@pytest.mark.parametrize("size", [(97, 130), (20, 20), (5, 61)])
def test_overlap_tile_output_has_input_size(small_valid_unet, size):
    inferer = OverlapTileInferer(roi_size=small_valid_unet.valid_input_size(min_output=24), sw_batch_size=3)
    with torch.no_grad():
        y = inferer(torch.rand(2, 1, *size), small_valid_unet)
    assert y.shape == (2, 2, *size)


def test_overlap_tile_is_seamless(small_valid_unet):
    """Tiling must give exactly what one big tile over the mirror-padded image gives."""
    net = small_valid_unet
    image = torch.rand(1, 1, 70, 90)
    small_tile = net.valid_input_size(min_output=20)
    big_tile = net.valid_input_size(min_output=90)
    with torch.no_grad():
        tiled = OverlapTileInferer(roi_size=small_tile, sw_batch_size=4)(image, net)
        whole = OverlapTileInferer(roi_size=big_tile)(image, net)  # a single tile covers the image
    torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-5)


def test_overlap_tile_3d():
    net = ValidUNet(spatial_dims=3, in_channels=1, out_channels=1, features=(4, 8)).eval()
    with torch.no_grad():
        y = OverlapTileInferer(roi_size=net.valid_input_size(min_output=6))(torch.rand(1, 1, 9, 13, 7), net)
    assert y.shape == (1, 1, 9, 13, 7)


def test_invalid_roi_size_is_reported(small_valid_unet):
    with pytest.raises(ValueError, match="not valid"):
        OverlapTileInferer(roi_size=50)(torch.rand(1, 1, 60, 60), small_valid_unet)
