"""Inference through the bundles' inference.json on real DICOM, NIfTI, NRRD, TIFF and PNG inputs (issues 4 and 7).

Where the model does not matter, the network is one 3x3 convolution that moves the image down by one row (see
:func:`shift_weights`): its mask is known exactly from the preprocessed input, and, unlike a pointwise network, it
changes when a slice is flipped or transposed, so the tests see orientation errors. The expected masks are computed
through the training loader (``LoadSlice2D`` with the bundle's orientation) and read back the same way.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
import torch
from monai.transforms import Compose
from PIL import Image
from pyconv_monai.cli import segment
from pyconv_monai.transforms import CTWindow, LoadSlice2D, LoadVolume
from pyconv_monai.workflows import InferenceError, load_checkpoint

from tests.conftest import EMBEDDED_DATA, REPO
from tests.dicom_copies import copy_series

CONV = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": 1}
# half a grid step away from 0.5 for HU / 1500, HU / 500 and x / 255: no pixel sits on the threshold
BIAS = -(0.5 + 1.0 / 3000.0)


def shift_weights(path: Path, bias: float = BIAS) -> Path:
    """Weights of ``CONV`` computing ``out[r, c] = in[r - 1, c] + bias`` (zero padding)."""
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 1] = 1.0
        conv.bias.fill_(bias)
    torch.save(conv.state_dict(), path)
    return path


def expected_mask(image: np.ndarray, bias: float = BIAS) -> np.ndarray:
    """What the bundle's sigmoid + threshold 0.5 makes of the shift network's output on a preprocessed slice."""
    shifted = np.zeros_like(image, dtype=np.float64)
    shifted[1:] = image[:-1]
    return shifted + bias > 0


def run(bundle: str, data: Path, out: Path, ckpt: Path, **overrides):
    """The bundle's inference.json run (as ``pyconv-monai segment``); re-raises the cause MONAI wraps."""
    values = {
        "network_def": CONV,
        "ckpt_file": str(ckpt),
        "progress": False,
        "device": "cpu",
        "runtime_options": {"precision": "fp32"},
        **overrides,
    }  # fmt: skip  (exact masks: the fp32 path)
    try:
        return segment(data, out, bundle, values, configure_logging=False)
    except RuntimeError as e:
        cause = e
        while type(cause) is RuntimeError and cause.__cause__ is not None:
            cause = cause.__cause__
        raise cause from None


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def sitk_affine_ras(img: sitk.Image) -> np.ndarray:
    """SimpleITK's voxel-to-LPS geometry as a voxel-to-RAS affine (nibabel's convention)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def dicom_files_by_z(folder: Path) -> list[str]:
    files = [str(p) for p in sorted(folder.iterdir())]
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def lung(shared_data, tmp_path_factory):
    """One lung-bundle run over the real DICOM series (uncompressed; JPEG 2000 with empty UIDs), NIfTI and NRRD."""
    root = tmp_path_factory.mktemp("lung")
    data = root / "in"
    data.mkdir()
    (data / "dcmqi").symlink_to(shared_data / "ct_dicom_dcmqi_3slice" / "dicom")
    (data / "totalseg").symlink_to(shared_data / "ct_dicom_totalseg" / "dicom")
    (data / "nifti").symlink_to(shared_data / "ct_nifti_totalseg")  # holds example_seg.nii.gz: left out by name
    shutil.copy(shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nrrd", data / "volume.nrrd")
    out = root / "out"
    rows = run("lung_ct_segmentation", data, out, shift_weights(root / "shift.pt"))
    return {"data": data, "out": out, "rows": rows, "csv": read_csv(out / "volumes.csv")}


def test_lung_run_writes_every_case(lung):
    assert sorted(os.listdir(lung["out"])) == sorted(
        ["99000_S2_seg.nii.gz", "99000_S2_seg.dcm", "CT_Body_3.0_seg.nii.gz", "CT_Body_3.0_seg.dcm",
         "example_ct_sm_seg.nii.gz", "volume_seg.nii.gz", "volumes.csv"]
    )  # fmt: skip
    table = lung["csv"]
    assert {c: (r["status"], r["slices"]) for c, r in table.items()} == {
        "99000_S2": ("ok", "3"), "CT_Body_3.0": ("ok", "20"), "example_ct_sm": ("ok", "30"), "volume": ("ok", "3")
    }  # fmt: skip
    assert [r["case"] for r in lung["rows"]] == list(table)
    assert "stand-in" in table["CT_Body_3.0"]["message"]  # the empty UIDs are reported, not hidden


@pytest.mark.parametrize(
    "case, source",
    [
        ("99000_S2", "dcmqi"),
        ("CT_Body_3.0", "totalseg"),
        ("example_ct_sm", "nifti/example_ct_sm.nii.gz"),
        ("volume", "volume.nrrd"),
    ],
)
def test_masks_lie_on_the_input_grid(lung, case, source):
    """Same shape and affine as the input read by SimpleITK (DICOM, NRRD) or nibabel (NIfTI); volume = voxels x size."""
    path = lung["data"] / source
    mask = nib.load(lung["out"] / f"{case}_seg.nii.gz")
    if path.suffix == ".gz":
        ref = nib.load(path)
        ref_affine, ref_shape = ref.affine, ref.shape
    else:
        img = sitk.ReadImage(dicom_files_by_z(path)) if path.is_dir() else sitk.ReadImage(str(path))
        ref_affine, ref_shape = sitk_affine_ras(img), img.GetSize()
    assert mask.shape == tuple(ref_shape)
    np.testing.assert_allclose(mask.affine, ref_affine, atol=1e-4)
    row = lung["csv"][case]
    voxels = int(np.asarray(mask.dataobj).sum())
    assert int(row["foreground_voxels"]) == voxels > 0
    voxel_mm3 = abs(np.linalg.det(ref_affine[:3, :3]))
    assert float(row["volume_ml"]) == pytest.approx(voxels * voxel_mm3 / 1000.0, rel=1e-5)


@pytest.mark.parametrize(
    "case, source", [("99000_S2", "dcmqi"), ("CT_Body_3.0", "totalseg"), ("volume", "volume.nrrd")]
)
def test_the_network_sees_the_training_slices(lung, case, source):
    """Each slice the network saw is the one the training loader makes (PLS, lung window); the mask maps back."""
    image_loader, mask_loader = LoadSlice2D(axcodes="PLS"), LoadSlice2D(axcodes="PLS")
    window = CTWindow("lung")
    mask_path = str(lung["out"] / f"{case}_seg.nii.gz")
    for k in range(int(lung["csv"][case]["slices"])):
        image = window(image_loader(str(lung["data"] / source), k))[0].numpy()
        written = mask_loader(mask_path, k)[0].numpy() > 0
        np.testing.assert_array_equal(written, expected_mask(image), err_msg=f"{case} slice {k}")


@pytest.mark.parametrize("case, source", [("99000_S2", "dcmqi"), ("CT_Body_3.0", "totalseg")])
def test_dicom_seg_references_its_series(lung, case, source):
    import highdicom as hd

    files = dicom_files_by_z(lung["data"] / source)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    uids = [h.SOPInstanceUID or h.file_meta.MediaStorageSOPInstanceUID for h in headers]
    seg_path = lung["out"] / f"{case}_seg.dcm"
    seg = hd.seg.segread(seg_path)
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.SegmentSequence[0].SegmentLabel == "Lung"
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # SNOMED CT lung
    ref = seg.ReferencedSeriesSequence[0]
    if headers[0].SeriesInstanceUID:
        assert (
            ref.SeriesInstanceUID == headers[0].SeriesInstanceUID
            and seg.StudyInstanceUID == headers[0].StudyInstanceUID
        )
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(uids)
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True) > 0
    mask = np.asarray(nib.load(lung["out"] / f"{case}_seg.nii.gz").dataobj) > 0  # (columns, rows, slices)
    np.testing.assert_array_equal(frames, mask.transpose(2, 1, 0))


def test_a_series_split_over_folders_is_read_from_its_files(lung, shared_data, tmp_path):
    """A series whose files lie in two folders is one case: the loader reads exactly its files (not a folder), the
    mask is the one of the whole series, and its DICOM SEG references every instance, frame by frame."""
    import highdicom as hd

    files = dicom_files_by_z(shared_data / "ct_dicom_dcmqi_3slice" / "dicom")
    data = tmp_path / "in"
    for folder, names in (("b", files[:1]), ("a", files[1:])):  # the folders do not sort as the slices do
        (data / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(name, data / folder / Path(name).name)
    out = tmp_path / "out"
    run("lung_ct_segmentation", data, out, shift_weights(tmp_path / "w.pt"))
    table = read_csv(out / "volumes.csv")
    assert {c: (r["status"], r["slices"]) for c, r in table.items()} == {"99000_S2": ("ok", "3")}
    mask, whole = nib.load(out / "99000_S2_seg.nii.gz"), nib.load(lung["out"] / "99000_S2_seg.nii.gz")
    np.testing.assert_array_equal(np.asarray(mask.dataobj), np.asarray(whole.dataobj))
    np.testing.assert_allclose(mask.affine, whole.affine, atol=1e-4)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = hd.seg.segread(out / "99000_S2_seg.dcm").get_pixels_by_source_instance(uids, combine_segments=True) > 0
    np.testing.assert_array_equal(frames, np.asarray(mask.dataobj).transpose(2, 1, 0) > 0)


def test_liver_bundle_flips_and_windows_ct_and_keeps_pngs(shared_data, tmp_path):
    """Liver: CT volumes oriented ALS (as the flipped training slices) with the W500/L150 window; PNGs as trained."""
    data = tmp_path / "in"
    data.mkdir()
    (data / "dcmqi").symlink_to(shared_data / "ct_dicom_dcmqi_3slice" / "dicom")
    png = shared_data / "liver_ct_2d" / "val" / "001.png"
    shutil.copy(png, data / "slice.png")
    out = tmp_path / "out"
    run("liver_ct_segmentation", data, out, shift_weights(tmp_path / "w.pt"))
    window, loader = CTWindow(None, window=500, level=150), LoadSlice2D(axcodes="ALS")
    for k in range(3):
        image = window(loader(str(data / "dcmqi"), k))[0].numpy()
        written = loader(str(out / "99000_S2_seg.nii.gz"), k)[0].numpy() > 0
        np.testing.assert_array_equal(written, expected_mask(image))
    flipped = LoadSlice2D(axcodes="PLS")(str(out / "99000_S2_seg.nii.gz"), 1)[0].numpy() > 0
    assert not np.array_equal(flipped, loader(str(out / "99000_S2_seg.nii.gz"), 1)[0].numpy() > 0)
    mask = np.asarray(Image.open(out / "slice_seg.png"))
    pixels = np.asarray(Image.open(png), dtype=np.float64) / 255.0
    assert mask.shape == pixels.shape and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask > 0, expected_mask(pixels))
    assert read_csv(out / "volumes.csv")["slice"]["volume_ml"] == ""  # a PNG has no voxel size


def test_em_tiff_in_tiff_out(em_stack, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    tifffile.imwrite(data / "stack.tif", em_stack[0][:3], photometric="minisblack")  # three real ISBI pages
    tifffile.imwrite(data / "page.tif", em_stack[0][7])
    out = tmp_path / "out"
    run("neuron_em_segmentation", data, out, shift_weights(tmp_path / "w.pt"))
    stack = tifffile.imread(out / "stack_seg.tif")
    assert stack.shape == (3, 512, 512) and stack.dtype == np.uint8
    for k in range(3):
        np.testing.assert_array_equal(stack[k] > 0, expected_mask(em_stack[0][k] / 255.0))
    page = tifffile.imread(out / "page_seg.tif")
    assert page.shape == (512, 512)
    np.testing.assert_array_equal(page > 0, expected_mask(em_stack[0][7] / 255.0))
    table = read_csv(out / "volumes.csv")
    assert table["stack"]["slices"] == "3" and table["page"]["slices"] == "1"


def test_hostile_tags_cannot_write_outside_the_output_folder(shared_data, tmp_path):
    data = tmp_path / "in"
    copy_series(shared_data / "ct_dicom_dcmqi_3slice" / "dicom", data / "evil", PatientID="../../x",
                SeriesDescription="../../../evil")  # fmt: skip
    copy_series(shared_data / "ct_dicom_dcmqi_3slice" / "dicom", data / "evil2", PatientID="/tmp/abs",
                SeriesDescription="..")  # fmt: skip
    out = tmp_path / "a" / "b" / "out"
    run("lung_ct_segmentation", data, out, shift_weights(tmp_path / "w.pt"))
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and data not in p.parents}
    assert written == {
        "w.pt",
        "a/b/out/volumes.csv",
        "a/b/out/x_S2_evil_seg.nii.gz",
        "a/b/out/x_S2_evil_seg.dcm",
        "a/b/out/tmp_abs_S2_seg.nii.gz",
        "a/b/out/tmp_abs_S2_seg.dcm",
    }
    assert pydicom.dcmread(out / "x_S2_evil_seg.dcm").PatientID == "../../x"  # the SEG keeps the patient's tags


def test_existing_outputs_are_never_overwritten_without_the_flag(shared_data, tmp_path):
    data, out = shared_data / "ct_dicom_dcmqi_3slice" / "dicom", tmp_path / "out"
    weights = shift_weights(tmp_path / "w.pt")
    run("lung_ct_segmentation", data, out, weights)
    before = digest(out)
    with pytest.raises(FileExistsError, match=r"volumes.csv.*|--overwrite true") as err:
        run("lung_ct_segmentation", data, out, weights)
    assert "--overwrite true" in str(err.value) and "volumes.csv" in str(err.value)
    assert digest(out) == before  # byte-identical

    (out / "volumes.csv").unlink()  # the masks are still there: the case fails, naming the file and the flag
    with pytest.raises(InferenceError, match="1 of 1 case"):
        run("lung_ct_segmentation", data, out, weights)
    row = read_csv(out / "volumes.csv")["99000_S2"]
    assert row["status"] == "error" and "99000_S2_seg.nii.gz exists; pass --overwrite true" in row["message"]
    assert {k: v for k, v in digest(out).items() if k != "volumes.csv"} == {
        k: v for k, v in before.items() if k != "volumes.csv"
    }
    old_uid = pydicom.dcmread(out / "99000_S2_seg.dcm").SOPInstanceUID
    run("lung_ct_segmentation", data, out, weights, overwrite=True)
    assert pydicom.dcmread(out / "99000_S2_seg.dcm").SOPInstanceUID != old_uid  # replaced
    assert read_csv(out / "volumes.csv")["99000_S2"]["status"] == "ok"
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary files left


def test_bad_studies_fail_alone(shared_data, tmp_path, caplog):
    dcmqi, totalseg = shared_data / "ct_dicom_dcmqi_3slice" / "dicom", shared_data / "ct_dicom_totalseg" / "dicom"
    data = tmp_path / "in"
    shutil.copytree(dcmqi, data / "good")
    (truncated,) = [p for p in copy_series(dcmqi, data / "truncated", SeriesDescription="cut") if p.name == "02.dcm"]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size * 6 // 10])  # pixel data cut short
    names = sorted(os.listdir(totalseg))
    (data / "gap").mkdir()
    for name in names[:9] + names[10:]:  # one slice missing in the middle
        shutil.copy(totalseg / name, data / "gap" / name)
    uid = pydicom.uid.generate_uid()
    copy_series(dcmqi, data / "mixed", prefix="a_", series_uid=uid, SeriesDescription="mixed")
    copy_series(dcmqi, data / "mixed", prefix="b_", series_uid=uid, SeriesDescription="mixed")  # same positions
    copy_series(dcmqi, data / "two", prefix="a_", SeriesNumber=5, SeriesDescription="first")
    copy_series(dcmqi, data / "two", prefix="b_", SeriesNumber=6, SeriesDescription="second")
    copy_series(dcmqi, data / "mr", Modality="MR", SeriesDescription="mr")
    nifti = (shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz").read_bytes()
    (data / "broken.nii.gz").write_bytes(nifti[: len(nifti) // 3])
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        with pytest.raises(InferenceError, match="5 of 8 case"):
            run("lung_ct_segmentation", data, out, shift_weights(tmp_path / "w.pt"))
    table = read_csv(out / "volumes.csv")
    status = {case: row["status"] for case, row in table.items()}
    assert status == {
        "99000_S2": "ok", "99000_S5_first": "ok", "99000_S6_second": "ok", "99000_S2_cut": "error",
        "CT_Body_3.0": "error", "99000_S2_mixed": "error", "99000_S2_mr": "error", "broken": "error",
    }  # fmt: skip
    assert (
        "cannot read the pixel data" in table["99000_S2_cut"]["message"]
        and "02.dcm" in table["99000_S2_cut"]["message"]
    )
    assert "1 slice(s) missing" in table["CT_Body_3.0"]["message"]
    assert "share a position" in table["99000_S2_mixed"]["message"]
    assert "modality 'MR'" in table["99000_S2_mr"]["message"] and "segments CT" in table["99000_S2_mr"]["message"]
    assert "broken.nii.gz" in table["broken"]["message"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{c}_seg.{e}" for c in ("99000_S2", "99000_S5_first", "99000_S6_second") for e in ("nii.gz", "dcm")]
        + ["volumes.csv"]
    )
    for case in ("99000_S2_cut", "CT_Body_3.0", "99000_S2_mixed", "99000_S2_mr", "broken"):
        assert f"case {case} (" in caplog.text  # logged with the case name


@pytest.mark.slow
def test_missing_weights_and_failed_cases_set_the_exit_status(shared_data, tmp_path):
    """``pyconv-monai segment``: 2 when the run cannot start (message names the weights and the flag), 1 when a case
    failed (the others are written), 0 otherwise."""
    from pyconv_monai.networks import get_network

    data = tmp_path / "in"
    data.mkdir()
    image = np.asarray(Image.open(shared_data / "liver_ct_2d" / "val" / "001.png"))
    Image.fromarray(image[224:288, 96:160]).save(data / "crop.png")  # a real 64x64 crop: PyConvU-Net is fast on it
    (data / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cmd = [sys.executable, "-m", "pyconv_monai.cli", "segment", str(data), str(tmp_path / "out"), "--bundle"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    missing = tmp_path / "missing" / "model.pt"  # (the bundle's own models/model.pt may be installed)
    args = ["liver_ct_segmentation", "--no-progress", "--ckpt-file", str(missing)]
    done = subprocess.run(cmd + args, capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert f"no model weights at {missing}" in done.stderr
    assert "--ckpt_file" in done.stderr and "--ckpt-file" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing was written

    torch.save(get_network("pyconvunet").state_dict(), tmp_path / "fresh.pt")
    bundle = str(REPO / "bundles" / "liver_ct_segmentation")  # a bundle given by its folder
    args = [bundle, "--ckpt-file", str(tmp_path / "fresh.pt"), "--no-progress", "--device", "cpu"]
    done = subprocess.run(cmd + args, capture_output=True, text=True, env=env)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 of 2 case(s) failed" in done.stderr and "bad.png" in done.stderr
    assert Image.open(tmp_path / "out" / "crop_seg.png").size == (64, 64)
    assert read_csv(tmp_path / "out" / "volumes.csv")["crop"]["status"] == "ok"
    done = subprocess.run(cmd + ["no_such_bundle"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "liver_ct_segmentation, lung_ct_segmentation, neuron_em_segmentation" in done.stderr


def test_console_script_is_registered():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "pyconv-monai"]
    assert script.value == "pyconv_monai.cli:main"


def _bundle_config(bundle: str, key: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO / "bundles" / bundle)
    return parser.get_parsed_content(key)


def test_liver_window_puts_real_liver_at_the_training_gray_level(shared_data):
    """The liver bundle's HU window maps the liver of a real CT to the 8-bit level the training PNGs have there.

    The PNGs' histogram has a half-empty bin every 25.5 levels: integer HU were scaled by 255 / 500, so the window is
    500 HU wide; W500/L150 then puts the liver of the real series where the PNGs have it. The viewer presets ("liver"
    W150/L30, "abdomen" W400/L50) do not."""
    pngs = sorted((shared_data / "liver_ct_2d" / "val").glob("*_mask.png"))
    train_levels = np.concatenate(
        [np.asarray(Image.open(str(m).replace("_mask", "")))[np.asarray(Image.open(m)) > 0] for m in pngs]
    )
    train = float(np.median(train_levels))
    ct = LoadVolume(axcodes="RAS")(str(shared_data / "ct_dicom_totalseg" / "dicom"))
    label = LoadVolume(axcodes="RAS")(str(shared_data / "ct_dicom_totalseg" / "labels" / "example_seg_dicom.nii.gz"))
    liver = label[0] == 5
    window = Compose(_bundle_config("liver_ct_segmentation", "ct_intensity"))
    real = float(np.median(window({"image": ct})["image"][0][liver].numpy() * 255))
    assert abs(real - train) < 12, (real, train)
    for preset in ("liver", "abdomen"):
        other = float(np.median(CTWindow(preset)(ct)[0][liver].numpy() * 255))
        assert abs(other - train) > 40, (preset, other, train)


def test_liver_orientation_puts_real_anatomy_where_the_training_pngs_have_it(shared_data):
    """In the training PNGs the liver is on the image's left and the spine at the top; with the liver bundle's
    axcodes the real CT's TotalSegmentator liver and vertebrae lie there too (and with PLS the spine would not)."""
    masks = sorted((shared_data / "liver_ct_2d" / "val").glob("*_mask.png"))
    columns, rows = [], []
    for m in masks:
        r, c = np.nonzero(np.asarray(Image.open(m)) > 0)
        columns.append(c.mean())
        image = np.asarray(Image.open(str(m).replace("_mask", "")))
        rows.append(np.nonzero(image > 200)[0].mean())  # bone: the spine and ribs
    assert np.mean(columns) < 256 and np.mean(rows) < 256
    axcodes = _bundle_config("liver_ct_segmentation", "axcodes")
    assert axcodes == "ALS"
    label = LoadVolume(axcodes=axcodes)(str(shared_data / "ct_dicom_totalseg" / "labels" / "example_seg_dicom.nii.gz"))
    label = label[0].numpy()
    liver_cols = np.nonzero(label == 5)[1]
    spine_rows = np.nonzero(np.isin(label, (32, 33)))[0]  # vertebrae T11, T12
    assert liver_cols.mean() < 256 and spine_rows.mean() < 256
    pls = LoadVolume(axcodes="PLS")(str(shared_data / "ct_dicom_totalseg" / "labels" / "example_seg_dicom.nii.gz"))
    assert np.nonzero(np.isin(pls[0].numpy(), (32, 33)))[0].mean() > 256


def test_the_config_shows_the_whole_recipe(tmp_path):
    """The recipe is in the config's standard sections, each step changed by its id: ``preprocessing`` starts with the
    training/evaluation loader (``LoadVolumed``, stored voxel order), ``postprocessing`` inverts ``preprocessing`` and
    ends with the writers, and the evaluator loads the weights with MONAI's ``CheckpointLoader`` of ``ckpt_file``
    into the network it runs."""
    from monai.bundle import ConfigParser
    from monai.handlers import CheckpointLoader
    from monai.inferers import SliceInferer
    from monai.transforms import Invertd
    from pyconv_monai.transforms import LoadVolumed
    from pyconv_monai.writers import SaveImageDicomSegd, SaveImageMaskd

    for bundle in ("lung_ct_segmentation", "liver_ct_segmentation", "neuron_em_segmentation"):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
        parser.update({"bundle_root": str(REPO / "bundles" / bundle), "output_dir": str(tmp_path / "out"),
                       "device": "$torch.device('cpu')", "ckpt_file": str(tmp_path / "w.pt"),
                       "loader#nonfinite": "fill"})  # fmt: skip
        evaluator = parser.get_parsed_content("evaluator")
        pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
        loader = pre.transforms[0]
        assert isinstance(loader, LoadVolumed) and loader.volumes.axcodes is None
        assert loader.volumes.nonfinite == "fill"
        assert isinstance(post.transforms[0], Invertd) and post.transforms[0].transform is pre
        assert [type(t) for t in post.transforms[-2:]] == [SaveImageMaskd, SaveImageDicomSegd]
        assert isinstance(parser.get_parsed_content("slice_inferer"), SliceInferer)
        assert evaluator.data_loader.dataset.transform is pre
        (checkpoint_loader,) = [h for h in parser.get_parsed_content("handlers") if isinstance(h, CheckpointLoader)]
        assert checkpoint_loader.load_path == str(tmp_path / "w.pt")
        assert checkpoint_loader.load_dict["network"] is evaluator.network
        assert checkpoint_loader.strict
    assert not (tmp_path / "out").exists()  # building writes nothing


def test_load_checkpoint(tmp_path):
    """MONAI's CheckpointLoader as the bundles configure it, run once: a plain state dict (the shipped weights, the
    best model training saves) or an epoch checkpoint holding it under ``network`` (train.json's saver, with the
    optimizer); clear errors for a missing file, other weights and junk."""
    from monai.handlers import CheckpointLoader

    def loaded(path, net):
        load_checkpoint(CheckpointLoader(load_path=str(path), load_dict={"network": net}, strict=True))
        return net

    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    optimizer = torch.optim.Adam(net.parameters())
    torch.save({"network": net.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "ck.pt")
    for name in ("plain.pt", "ck.pt"):
        other = loaded(tmp_path / name, torch.nn.Conv2d(1, 1, 3, padding=1))
        assert torch.equal(other.weight, net.weight) and torch.equal(other.bias, net.bias)
    with pytest.raises(FileNotFoundError, match="no model weights at .*--ckpt_file"):
        loaded(tmp_path / "missing.pt", net)
    torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt does not fit the network Conv2d"):
        loaded(tmp_path / "other.pt", net)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable PyTorch checkpoint"):
        loaded(tmp_path / "junk.pt", net)


def test_shipped_weights_load_through_the_bundles_checkpoint_loader():
    """Each bundle's ``checkpointloader`` loads its shipped ``models/model.pt`` (a plain state dict) strictly."""
    from monai.bundle import ConfigParser

    for bundle in ("lung_ct_segmentation", "liver_ct_segmentation", "neuron_em_segmentation"):
        root = REPO / "bundles" / bundle
        if not (root / "models" / "model.pt").is_file():
            pytest.skip(f"no shipped weights in {root}")
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        parser.update({"bundle_root": str(root), "device": "$torch.device('cpu')"})
        network = parser.get_parsed_content("network")
        load_checkpoint(parser.get_parsed_content("checkpointloader"))
        state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
        assert all(torch.equal(network.state_dict()[k], v) for k, v in state.items())


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("nothing to segment")
    with pytest.raises(ValueError, match="no images found under"):
        run("lung_ct_segmentation", tmp_path / "in", tmp_path / "out", shift_weights(tmp_path / "w.pt"))


def test_embedded_em_stack_is_the_default_input():
    path = _bundle_config("neuron_em_segmentation", "dataset_dir")
    assert Path(path).resolve() == (EMBEDDED_DATA / "isbi2012_em" / "train-volume.tif").resolve()


# sha256 of the voxels (uint8, stored order) of the main job's mask as SegmentationPredictor wrote it before the
# recipe moved into inference.json's sections (commit afff18c, OpenVINO fp32, the shipped liver weights)
MAIN_JOB_MASK_SHA256 = "17d06b690e72783dccbbd382f9424e412252dc64b7fce68732d17fb46da76f9a"


@pytest.mark.slow
def test_main_job_mask_is_voxel_identical_to_the_predictor_it_replaced(tmp_path):
    """The liver bundle on the embedded series, shipped weights, OpenVINO fp32: the same voxels as before."""
    out = tmp_path / "out"
    values = {"device": "cpu", "progress": False, "runtime": "openvino", "runtime_options": {"precision": "fp32"}}
    rows = segment(EMBEDDED_DATA / "ct_dicom_totalseg" / "dicom", out, "liver_ct_segmentation", values,
                   configure_logging=False)  # fmt: skip
    mask = np.ascontiguousarray(np.asarray(nib.load(out / rows[0]["mask"]).dataobj))
    assert mask.dtype == np.uint8 and mask.shape == (512, 512, 20)
    assert hashlib.sha256(mask.tobytes()).hexdigest() == MAIN_JOB_MASK_SHA256
