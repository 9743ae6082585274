"""Spacing-aware CT inference (issue 11): the in-plane resampling transform, its inverse, and the liver bundle on real
CT at 3 mm and on 512x512 DICOM series, with the shipped weights."""

from __future__ import annotations

import importlib.util
import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from pyconv_monai.cli import segment
from pyconv_monai.data import tracking_meta
from pyconv_monai.transforms import InPlaneSpacingd, in_plane_spacing
from pyconv_monai.workflows import InferenceError

from tests.conftest import REPO

LIVER = "liver_ct_segmentation"
WEIGHTS = REPO / "bundles" / LIVER / "models" / "model.pt"


def _benchmark():
    spec = importlib.util.spec_from_file_location("spacing_benchmark", REPO / "benchmarks" / "spacing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _volume(shape=(40, 30, 5), spacing=(2.5, 2.0, 3.0), name="vol.nii.gz") -> MetaTensor:
    """A ramp image with an oblique affine (rotated about z) and the given spacing."""
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(spacing)
    affine[:3, 3] = (10.0, -20.0, 30.0)
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    with tracking_meta():
        return MetaTensor(torch.as_tensor(i + 2 * j + 100 * k)[None], affine=torch.as_tensor(affine),
                          meta={"filename_or_obj": name})  # fmt: skip


def test_resampling_is_in_plane_and_inverts_to_the_exact_grid():
    img = _volume()
    pre = Compose([InPlaneSpacingd("image", pixdim=1.0, mode="bicubic")])
    with tracking_meta():
        d = pre({"image": img})
        out = d["image"]
        # MONAI Spacing: the first and last pixel centres span the same extent, (n - 1) x spacing
        assert out.shape[-1] == 5 and tuple(out.shape[1:3]) == (39 * 5 // 2 + 1, 29 * 2 + 1)
        assert in_plane_spacing(out.affine) == pytest.approx((1.0, 1.0))
        np.testing.assert_allclose(out.affine[:3, 2], img.affine[:3, 2])  # the slice axis is untouched
        np.testing.assert_allclose(out.affine[:3, 3], img.affine[:3, 3], atol=1e-5)  # same first pixel centre
        np.testing.assert_allclose(out.affine[:3, 0] / 1.0, img.affine[:3, 0] / 2.5, atol=1e-6)  # same directions
        # each slice keeps its own values (no mixing along z): slice k holds 100 k + in-plane ramp
        means = out.as_tensor()[0].mean(dim=(0, 1)).numpy()
        np.testing.assert_allclose(np.diff(means), 100.0, atol=1e-3)
        d["pred"] = MetaTensor(out.as_tensor().clone(), affine=out.affine)
        back = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(d)["pred"]
    assert back.shape == img.shape
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-6)
    inner = (slice(2, -2), slice(2, -2), slice(None))  # a linear ramp survives the round trip inside the border
    np.testing.assert_allclose(back.as_tensor()[0][inner].numpy(), img.as_tensor()[0][inner].numpy(), atol=1e-3)


def test_spacings_in_the_kept_range_pass_through_unchanged():
    img = _volume(spacing=(0.8, 0.9, 2.0))
    t = Compose([InPlaneSpacingd("image", pixdim=1.0, min_pixdim=0.6, max_pixdim=1.0)])
    with tracking_meta():
        d = t({"image": img})
        assert torch.equal(d["image"].as_tensor(), img.as_tensor())
        d["pred"] = MetaTensor(d["image"].as_tensor() > 50, affine=d["image"].affine)
        back = Invertd("pred", transform=t, orig_keys="image")(d)["pred"]
    assert torch.equal(back.as_tensor(), img.as_tensor() > 50)
    np.testing.assert_allclose(back.affine, img.affine)


@pytest.mark.parametrize(
    "spacing, message", [((3.0, 0.5, 1.0), "more anisotropic than 4:1"), ((0.0, 1.0, 1.0), "no usable pixel spacing")]
)
def test_bad_spacing_is_a_clear_error(spacing, message):
    with pytest.raises(ValueError, match=message) as e:
        InPlaneSpacingd("image", pixdim=1.0)({"image": _volume(spacing=spacing, name="/data/bad.nii.gz")})
    assert "/data/bad.nii.gz" in str(e.value)


def test_oversized_resampling_is_refused():
    with pytest.raises(ValueError, match="refused"):
        InPlaneSpacingd("image", pixdim=0.1)({"image": _volume(shape=(512, 512, 1), spacing=(1.0, 1.0, 1.0))})


@pytest.fixture(scope="module")
def liver_3mm(shared_data, tmp_path_factory):
    """The liver bundle (shipped weights) on the 3 mm NIfTI CT, with and without resampling."""
    if not WEIGHTS.is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    root = tmp_path_factory.mktemp("liver3mm")
    image = shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz"
    base = {"device": "cpu", "progress": False, "runtime": "torch"}
    on = segment(image, root / "on", LIVER, base, configure_logging=False)
    off = segment(image, root / "off", LIVER, {**base, "pixel_spacing": [0, 0]}, configure_logging=False)
    return {"image": image, "label": shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz", "root": root,
            "on": root / "on" / on[0]["mask"], "off": root / "off" / off[0]["mask"]}  # fmt: skip


def test_liver_dice_on_the_3mm_ct_reaches_the_goal(liver_3mm):
    dice = _benchmark().liver_dice
    on, off = dice(liver_3mm["on"], liver_3mm["label"], 5), dice(liver_3mm["off"], liver_3mm["label"], 5)
    assert on >= 0.85, f"liver Dice {on:.3f} with resampling"
    assert on > off + 0.1, f"resampling should matter at 3 mm: {on:.3f} vs {off:.3f} without"


def test_resampled_mask_keeps_the_input_grid(liver_3mm):
    ref, mask = nib.load(liver_3mm["image"]), nib.load(liver_3mm["on"])
    assert mask.shape == ref.shape
    np.testing.assert_allclose(mask.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}


def test_dicom_series_at_training_spacing_are_not_lower(shared_data, tmp_path):
    """The 512x512 series at 0.81 mm lie in the kept range: the same Dice as without resampling."""
    if not WEIGHTS.is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    series = shared_data / "ct_dicom_dcmqi_3slice" / "dicom"
    label = shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nii.gz"
    base = {"device": "cpu", "progress": False, "runtime": "torch", "dicom_seg": False}
    on = segment(series, tmp_path / "on", LIVER, base, configure_logging=False)
    off = segment(series, tmp_path / "off", LIVER, {**base, "pixel_spacing": [0, 0]}, configure_logging=False)
    dice = _benchmark().liver_dice
    d_on, d_off = dice(tmp_path / "on" / on[0]["mask"], label, 1), dice(tmp_path / "off" / off[0]["mask"], label, 1)
    assert d_on >= d_off and d_on > 0.85


def test_inputs_without_spacing_are_used_as_they_are_and_bad_spacing_fails_alone(shared_data, tmp_path, caplog):
    """A PNG is not resampled (the log says so); a volume with 6:1 pixels fails with nothing written."""
    data = tmp_path / "in"
    data.mkdir()
    shutil.copy(shared_data / "liver_ct_2d" / "val" / "001.png", data / "slice.png")
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 2), np.int16), np.diag([3.0, 0.5, 2.0, 1.0])), data / "aniso.nii.gz")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="pyconv_monai"):
        with pytest.raises(Exception) as e:
            segment(data, out, LIVER, {"device": "cpu", "progress": False, "runtime": "torch"}, configure_logging=False)
    cause = e.value
    while type(cause) is RuntimeError and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, InferenceError)
    rows = {r["case"]: r for r in cause.rows}
    assert rows["slice"]["status"] == "ok" and rows["aniso"]["status"] == "error"
    assert "anisotropic" in rows["aniso"]["message"] and "aniso.nii.gz" in rows["aniso"]["message"]
    assert not list(out.glob("aniso*"))
    assert "carries no pixel spacing" in caplog.text


def _validate_preprocessing(bundle: str, override: bool):
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / bundle / "configs"
    files = [configs / "train.json"] + ([configs / "spacing_train.json"] if override else [])
    parser = ConfigParser(ConfigParser.load_config_files([str(f) for f in files]))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    parser["dataset_dir"] = "/nonexistent"  # no datalist needed: only the transforms are built
    return parser.get_parsed_content("validate#preprocessing")


def test_training_override_resamples_volumes_and_keeps_png_slices(shared_data, tmp_path):
    """configs/spacing_train.json: a 3 mm NIfTI slice becomes 1 mm (512x512 after padding, the liver's area kept);
    the PNG training slices, which carry no spacing, come out exactly as without the override."""
    seg = nib.load(shared_data / "ct_nifti_totalseg" / "example_seg.nii.gz")
    liver = (np.asarray(seg.dataobj) == 5).astype(np.uint8)
    nib.save(nib.Nifti1Image(liver, seg.affine), tmp_path / "liver_label.nii.gz")
    item = {"image": str(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz"),
            "label": str(tmp_path / "liver_label.nii.gz"), "slice": 12}  # fmt: skip
    with_override = _validate_preprocessing(LIVER, True)
    with tracking_meta():
        out = with_override(dict(item))
    assert tuple(out["image"].shape) == (1, 512, 512) == tuple(out["label"].shape)
    assert in_plane_spacing(out["image"].affine) == pytest.approx((1.0, 1.0))
    assert set(np.unique(out["label"].numpy())) == {0.0, 1.0}
    area_3mm = int(liver[:, :, 12].sum()) * 9.0  # mm^2
    assert float(out["label"].sum()) == pytest.approx(area_3mm, rel=0.1)

    png = shared_data / "liver_ct_2d" / "val" / "001.png"
    png_item = {"image": str(png), "label": str(png.with_name("001_mask.png"))}
    plain = _validate_preprocessing(LIVER, False)(dict(png_item))
    overridden = with_override(dict(png_item))
    assert torch.equal(torch.as_tensor(plain["image"]), torch.as_tensor(overridden["image"]))
    assert torch.equal(torch.as_tensor(plain["label"]), torch.as_tensor(overridden["label"]))


def test_a_1024_matrix_at_half_a_millimetre_is_resampled_down_and_back(tmp_path, caplog):
    """A small-FOV 1024x1024 reconstruction at 0.5 mm: the network sees 0.8 mm slices (lung bundle), the mask comes
    back on the 1024x1024 grid with the input's affine."""
    from tests.workflows.test_inference import CONV, shift_weights

    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 400, size=(1024, 1024, 3)).astype(np.int16)
    affine = np.diag([-0.5, -0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), tmp_path / "small_fov.nii.gz")
    values = {"network_def": CONV, "ckpt_file": str(shift_weights(tmp_path / "shift.pt")), "device": "cpu",
              "progress": False, "runtime": "torch"}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pyconv_monai"):
        rows = segment(tmp_path / "small_fov.nii.gz", tmp_path / "out", "lung_ct_segmentation", values,
                       configure_logging=False)  # fmt: skip
    mask = nib.load(tmp_path / "out" / rows[0]["mask"])
    assert mask.shape == hu.shape
    np.testing.assert_allclose(mask.affine, affine, atol=1e-6)
    assert "in-plane pixel spacing 0.5 x 0.5 mm; network input (640, 640) per slice" in caplog.text


def test_flip_averaging_runs_the_flipped_slices_and_flips_them_back(shared_data, tmp_path):
    """``tta``: with a network that commutes with flips (a centre-only 3x3 kernel) the averaged mask equals the plain
    one; with the shift network (which does not) it differs, so the flipped passes really run and are undone."""
    from tests.workflows.test_inference import BIAS, CONV, shift_weights

    centre = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        centre.weight.zero_()
        centre.weight[0, 0, 1, 1] = 1.0
        centre.bias.fill_(BIAS)
    torch.save(centre.state_dict(), tmp_path / "centre.pt")
    image = shared_data / "ct_dicom_dcmqi_3slice" / "dicom"
    base = {"network_def": CONV, "device": "cpu", "progress": False, "runtime": "torch", "dicom_seg": False}

    def mask(weights, tta: bool, name: str) -> np.ndarray:
        rows = segment(image, tmp_path / name, "lung_ct_segmentation", {**base, "ckpt_file": str(weights), "tta": tta},
                       configure_logging=False)  # fmt: skip
        return np.asarray(nib.load(tmp_path / name / rows[0]["mask"]).dataobj)

    plain, averaged = mask(tmp_path / "centre.pt", False, "c0"), mask(tmp_path / "centre.pt", True, "c1")
    assert plain.any()
    np.testing.assert_array_equal(plain, averaged)
    shift = shift_weights(tmp_path / "shift.pt")
    assert not np.array_equal(mask(shift, False, "s0"), mask(shift, True, "s1"))
