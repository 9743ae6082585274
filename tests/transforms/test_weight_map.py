"""The U-Net border weight map against a brute-force implementation of the paper's formula, on real EM labels."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from pyconv_monai.transforms import BorderWeightMap, BorderWeightMapd, border_weight_map
from scipy import ndimage


def _brute_force(label, w0=10.0, sigma=5.0):
    """Eq. 2 of Ronneberger et al. with every object's full distance map, on background pixels."""
    objects, n = ndimage.label(label > 0)
    dist = np.sort(np.stack([ndimage.distance_transform_edt(objects != i) for i in range(1, n + 1)]), axis=0)
    border = np.where(label == 0, w0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * sigma**2)), 0.0)
    values, inverse, counts = np.unique(label, return_inverse=True, return_counts=True)
    class_weight = (label.size / (len(values) * counts))[inverse].reshape(label.shape)
    return class_weight + border


def test_matches_the_formula_on_a_real_em_label(em_stack):
    label = (em_stack[1][4, 100:260, 200:360] > 0).astype(np.uint8)  # 1 = cell interior, 0 = membrane
    assert ndimage.label(label)[1] > 5
    np.testing.assert_allclose(border_weight_map(label), _brute_force(label), atol=2e-3)


def test_gap_between_two_objects():
    label = np.zeros((40, 60), np.uint8)
    label[10:30, 5:28] = 1
    label[10:30, 30:55] = 1  # a 2-pixel gap at columns 28-29
    w = border_weight_map(label, class_weights=None)
    assert w[20, 28] == pytest.approx(1 + 10 * np.exp(-((1 + 2) ** 2) / 50), rel=1e-4)  # d1 = 1, d2 = 2
    assert np.all(w[label == 1] == 1.0)  # inside objects: w_c only
    assert w[20, 28] > w[2, 28] > 1.0  # largest in the gap
    single = np.zeros((20, 20), np.uint8)
    single[5:10, 5:10] = 1
    np.testing.assert_allclose(border_weight_map(single, class_weights=None), 1.0)  # one object: no border term


def test_class_weights():
    label = np.zeros((10, 10), np.uint8)
    label[:, :2] = 1
    w = border_weight_map(label)  # balanced: 100 / (2 * 20) and 100 / (2 * 80)
    assert w[0, 0] == pytest.approx(2.5) and w[0, 5] == pytest.approx(0.625) and w.mean() == pytest.approx(1.0)
    w = border_weight_map(label, class_weights=[1.0, 3.0])
    assert w[0, 0] == 3.0 and w[0, 9] == 1.0
    with pytest.raises(ValueError, match="class_weights has 1 entries"):
        border_weight_map(label, class_weights=[1.0])


def test_dictionary_transform_keeps_meta(em_stack):
    label = MetaTensor(
        torch.as_tensor(em_stack[1][:1, :128, :128] > 0, dtype=torch.float32), meta={"filename_or_obj": "l.tif"}
    )
    d = BorderWeightMapd("label", weight_keys="weight", w0=10, sigma=5)({"label": label})
    weight = d["weight"]
    assert isinstance(weight, MetaTensor) and weight.shape == (1, 128, 128) and weight.dtype == torch.float32
    assert weight.meta["filename_or_obj"] == "l.tif"
    assert float(weight.max()) > 5 and float(weight.min()) > 0
    with pytest.raises(ValueError, match="one channel"):
        BorderWeightMap()(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="one weight key per label key"):
        BorderWeightMapd(["label", "other"], weight_keys="weight")
