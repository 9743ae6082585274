"""The papers' augmentations keep image and label aligned and labels discrete."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from pyconv_monai.transforms import (
    BinarizeLabeld,
    LoadSlice2Dd,
    NormalizeEMd,
    RandElasticDeformd,
    pyconvunet_augmentation,
    unet_augmentation,
)


@pytest.fixture(scope="module")
def em_item(shared_data):
    folder = shared_data / "isbi2012_em"
    item = {"image": str(folder / "train-volume.tif"), "label": str(folder / "train-labels.tif"), "slice": 5}
    return BinarizeLabeld("label")(NormalizeEMd("image")(LoadSlice2Dd()(item)))


def _dihedral(x, max_k):
    outs = []
    for k in range(max_k + 1):
        r = np.rot90(x, k)
        outs += [r, r[::-1], r[:, ::-1], r[::-1, ::-1]]
    return outs


def test_pyconvunet_flips_and_rotations_only(em_item):
    aug = pyconvunet_augmentation(keys=("image", "label"), prob=0.5)
    aug.set_random_state(0)
    seen = set()
    image = em_item["image"][0].numpy()
    for _ in range(12):
        out = aug(dict(em_item))
        result = out["image"][0].numpy()
        matches = [i for i, ref in enumerate(_dihedral(image, 2)) if np.array_equal(result, ref)]
        assert matches, "output is not a flip/rotation of the input"
        seen.add(matches[0] // 4)
        label = em_item["label"][0].numpy()
        assert any(np.array_equal(out["label"][0].numpy(), ref) for ref in [_dihedral(label, 2)[matches[0]]])
    assert len(seen) > 1
    aug0 = pyconvunet_augmentation(prob=0.0)
    torch.testing.assert_close(aug0(dict(em_item))["image"].as_tensor(), em_item["image"].as_tensor())


def test_pyconvunet_reproducible(em_item):
    a, b = pyconvunet_augmentation(prob=0.5), pyconvunet_augmentation(prob=0.5)
    a.set_random_state(3)
    b.set_random_state(3)
    for _ in range(3):
        torch.testing.assert_close(a(dict(em_item))["image"].as_tensor(), b(dict(em_item))["image"].as_tensor())


def test_unet_deforms_image_and_label_together(em_item):
    aug = unet_augmentation(keys=("image", "label", "copy"), image_keys=("image",), prob=1.0, gamma=None)
    aug.set_random_state(1)
    item = {**em_item, "copy": MetaTensor(em_item["label"].as_tensor().clone())}
    out = aug(item)
    label = out["label"][0]
    assert set(torch.unique(label).tolist()) <= {0.0, 1.0}  # nearest neighbour keeps labels discrete
    assert torch.equal(label, out["copy"][0])  # every key gets the same deformation
    assert not torch.equal(label, em_item["label"][0])  # and it did deform
    assert out["image"].shape == (1, 512, 512)
    # the deformed image still lines up with the deformed label: membranes (label 0) are dark in EM
    image = out["image"][0]
    assert float(image[label == 0].mean()) < float(image[label == 1].mean())


def test_unet_gray_values_only_on_images():
    aug = unet_augmentation(prob=1.0, max_shift=0, max_rotation=0, elastic_sigma=0)
    aug.set_random_state(0)
    image = MetaTensor(torch.rand(1, 64, 64))
    label = MetaTensor((torch.rand(1, 64, 64) > 0.5).float())
    out = aug({"image": image, "label": label})
    torch.testing.assert_close(out["label"].as_tensor(), label.as_tensor())
    assert not torch.allclose(out["image"].as_tensor(), image.as_tensor())
    with pytest.raises(ValueError, match=r"image_keys \['img'\] are not in keys"):
        unet_augmentation(image_keys="img")


def test_elastic_identity_and_monai_bias():
    """Zero displacement is the identity (MONAI's Rand2DElasticd is not: see the augment module's docstring)."""
    rows = MetaTensor(torch.arange(64.0)[:, None].expand(64, 48)[None].contiguous())
    label = MetaTensor((torch.rand(1, 64, 48) > 0.5).float())
    t = RandElasticDeformd(["rows", "label"], prob=1.0, sigma=0.0, mode=("bilinear", "nearest"))
    out = t({"rows": rows, "label": label})
    torch.testing.assert_close(out["rows"].as_tensor(), rows.as_tensor(), atol=1e-3, rtol=0)
    assert torch.equal(out["label"].as_tensor(), label.as_tensor())
    # a pure shift moves the content by exactly that many pixels
    t = RandElasticDeformd("rows", prob=1.0, sigma=0.0, max_shift=5.0)
    t.set_random_state(4)
    out = t({"rows": rows})["rows"]
    torch.testing.assert_close(out[0, 20:40, 10] - rows[0, 20:40, 10], torch.full((20,), t.shift[0]), atol=1e-3, rtol=0)


def test_elastic_displacement_statistics():
    t = RandElasticDeformd("image", prob=1.0, sigma=10.0, grid_size=3)
    t.set_random_state(0)
    shifts = []
    for _ in range(200):
        t.randomize()
        grid = t.sampling_grid(65, 65)[0]
        shifts.append(float(grid[0, 0, 1] * 32 - (-32)))  # corner control point: row displacement in pixels
    assert 8 < float(np.std(shifts)) < 12  # N(0, 10 px) at the control points
    with pytest.raises(ValueError, match="grid_size must be at least 2"):
        RandElasticDeformd("image", grid_size=1)
