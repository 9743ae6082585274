"""CT windows and EM normalisation, on real CT and EM slices."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from pyconv_monai.data import load_datalist
from pyconv_monai.transforms import CT_WINDOWS, CTWindow, CTWindowd, LoadSlice2Dd, NormalizeEM, NormalizeEMd


@pytest.mark.parametrize(
    "preset, hu, expected",
    [("lung", [-1350, -600, 150, -2000, 3000], [0, 0.5, 1, 0, 1]), ("abdomen", [-150, 50, 250], [0, 0.5, 1])],
)
def test_presets_map_the_window_and_clip(preset, hu, expected):
    out = CTWindow(preset)(torch.tensor([[hu]], dtype=torch.float32))
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-6)
    assert CT_WINDOWS["liver"] == (150.0, 30.0)


def test_custom_window_level_and_out_range():
    img = MetaTensor(torch.tensor([[[-100.0, 0.0, 100.0]]]), meta={"filename_or_obj": "x.nii"})
    out = CTWindow(preset=None, window=200, level=0, out_range=(-1, 1))(img)
    np.testing.assert_allclose(out[0, 0].numpy(), [-1, 0, 1])
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.nii"
    assert CTWindow("liver", level=60).a_min == pytest.approx(-15)  # override one value of a preset


def test_window_errors():
    with pytest.raises(ValueError, match="unknown CT window preset 'kidney'"):
        CTWindowd("image", preset="kidney")
    with pytest.raises(ValueError, match="both window and level"):
        CTWindow(preset=None, window=400)
    with pytest.raises(ValueError, match="must be positive"):
        CTWindow(window=0)


def test_lung_window_on_real_slice(shared_data):
    item = load_datalist(shared_data / "lung_ct_2d")[0]
    raw = LoadSlice2Dd()(item)
    d = CTWindowd("image", preset="lung")(raw)
    image, lung = d["image"][0], raw["label"][0] > 0
    assert -950 < float(raw["image"][0][lung].mean()) < -500  # aerated lung in HU
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0  # out-of-field -2619 HU and bone clipped
    assert 0.2 < float(image[lung].mean()) < 0.5  # below the window level (-600 HU)


@pytest.mark.parametrize("mode", ["fixed", "percentile", "zscore"])
def test_em_normalisation(em_stack, mode):
    img = torch.as_tensor(em_stack[0][:1].astype(np.float32))
    out = NormalizeEM(mode)(img)
    if mode == "fixed":
        torch.testing.assert_close(out, img / 255.0)
    elif mode == "percentile":
        assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    else:
        assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-3
    d = NormalizeEMd("image", mode=mode)({"image": img, "label": img})
    torch.testing.assert_close(d["image"], out) and torch.testing.assert_close(d["label"], img)
    with pytest.raises(ValueError, match="unknown EM normalisation 'minmax'"):
        NormalizeEM("minmax")
