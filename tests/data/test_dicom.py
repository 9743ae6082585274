"""DICOM series discovery and reading on the real CT series, and every way a series folder can be wrong."""

import os
import shutil
import warnings

import numpy as np
import pydicom
import pytest
import torch
from monai.data import PydicomReader
from monai.transforms import LoadImage
from pyconv_monai.data import DicomSegReader, DicomSeriesReader, find_dicom_series, is_dicom_seg, series_geometry
from pyconv_monai.transforms import LoadVolumed


@pytest.fixture(scope="module")
def totalseg_dir(shared_data):
    return shared_data / "ct_dicom_totalseg" / "dicom"


@pytest.fixture(scope="module")
def dcmqi(shared_data):
    return shared_data / "ct_dicom_dcmqi_3slice"


@pytest.fixture(scope="module")
def totalseg_volume(totalseg_dir):
    return _load_series(totalseg_dir)


def _load_series(path, series_uid=None):
    """A series as the product reads it: MONAI's ``LoadImage`` with our reader (what ``get_reader`` picks for DICOM)."""
    reader = DicomSeriesReader(series_uid=series_uid)
    return LoadImage(image_only=True, ensure_channel_first=True)(str(path), reader=reader)


def _copy(src_dir, dst_dir, names=None):
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(src_dir)) if names is None else names:
        shutil.copy(src_dir / name, dst_dir / name)
    return dst_dir


def _edit(path, **tags):
    ds = pydicom.dcmread(path)
    for tag, value in tags.items():
        setattr(ds, tag, value)
    ds.save_as(path)


def test_find_series_with_empty_uid_sorted_by_position(totalseg_dir):
    (series,) = find_dicom_series(totalseg_dir)
    assert series.series_uid == "" and series.key.startswith("noUID:")
    assert series.modality == "CT" and series.description == "CT Body 3.0" and len(series.files) == 20
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in series.files]
    assert z == sorted(z) and z[0] == -804.5 and z[-1] == -766.5  # inferior to superior, not InstanceNumber order


def test_find_series_skips_seg_and_walks_the_tree(shared_data, dcmqi):
    assert is_dicom_seg(dcmqi / "seg" / "liver_seg_DICOM-SEG.dcm")
    found = find_dicom_series(shared_data)
    assert sorted(len(s.files) for s in found) == [3, 20]  # the SEG object is not an image series
    (series,) = find_dicom_series(dcmqi)
    assert series.series_uid == "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
    assert [os.path.basename(f) for f in series.files] == ["03.dcm", "02.dcm", "01.dcm"]
    assert "3 file(s)" in str(series)


def test_jpeg2000_series_in_hu_with_affine(totalseg_volume, totalseg_dir):
    vol = totalseg_volume
    assert vol.shape == (1, 512, 512, 20) and vol.dtype == torch.float32
    assert float(vol.min()) == -1024.0 and float(vol.max()) == 1839.0  # RescaleIntercept -1024 applied
    expected = np.diag([-0.9765625, -0.9765625, 2.0, 1.0])
    expected[:3, 3] = [249.51171875, 437.51171875, -804.5]  # RAS: LPS x, y negated; first slice is the lowest
    np.testing.assert_allclose(vol.affine.numpy(), expected, atol=1e-6)
    assert vol.meta["series_uid"] == "" and vol.meta["modality"] == "CT"
    # slice k is the file at z = -804.5 + 2k, in HU, transposed to (column, row) as MONAI's PydicomReader
    ds = pydicom.dcmread(find_dicom_series(totalseg_dir)[0].files[3])
    assert float(ds.ImagePositionPatient[2]) == -798.5
    np.testing.assert_array_equal(vol[0, :, :, 3].numpy(), ds.pixel_array.T.astype(np.float32) - 1024.0)


def test_same_world_geometry_as_monai_pydicom_reader(dcmqi):
    ours = _load_series(dcmqi / "dicom")
    monai = LoadImage(image_only=True, ensure_channel_first=True)(str(dcmqi / "dicom"), reader=PydicomReader())
    # MONAI stacks by InstanceNumber (superior first); ours inferior first: the same voxels in the same places
    np.testing.assert_array_equal(ours.flip(-1).numpy(), monai.numpy())
    ijk = np.array([[0, 0, 0, 1], [511, 0, 2, 1], [100, 300, 1, 1]], float)
    mirrored = ijk.copy()
    mirrored[:, 2] = 2 - ijk[:, 2]
    np.testing.assert_allclose(ijk @ ours.affine.numpy().T, mirrored @ monai.affine.numpy().T, atol=1e-4)


@pytest.mark.parametrize("label", ["liver_spine_seg.nrrd", "liver_spine_seg.nii.gz", "liver_seg_DICOM-SEG.dcm"])
def test_dcmqi_labels_line_up_with_the_series(dcmqi, label):
    """Geometry, not shape: in the series' own voxels, the liver label covers soft tissue and the spine label bone."""
    item = LoadVolumed()({"image": str(dcmqi / "dicom"), "label": str(dcmqi / "seg" / label)})
    image, seg = item["image"][0], item["label"][0]
    assert image.shape == seg.shape == (512, 512, 3)
    liver = float(image[seg == 1].mean())
    assert 0 < liver < 100, liver  # README: 33-40 HU
    if label != "liver_seg_DICOM-SEG.dcm":
        spine = float(image[seg == 2].mean())
        assert 200 < spine < 600, spine  # README: 312-345 HU
    # misaligned by one slice, the liver mean would change; check the exact alignment against the NRRD
    nrrd = LoadVolumed(keys="label")({"label": str(dcmqi / "seg" / "liver_spine_seg.nrrd")})["label"][0]
    assert torch.equal((seg == 1), (nrrd == 1))


def test_totalseg_las_label_lines_up_with_the_jpeg2000_series(shared_data):
    folder = shared_data / "ct_dicom_totalseg"
    item = LoadVolumed()({"image": str(folder / "dicom"), "label": str(folder / "labels" / "example_seg_dicom.nii.gz")})
    image, seg = item["image"][0], item["label"][0]
    hu = {c: float(image[seg == c].mean()) for c in (1, 5, 32)}
    assert 40 < hu[5] < 150 and 40 < hu[1] < 150, hu  # liver 89, spleen 80 HU (README)
    assert hu[32] > 200, hu  # T12 vertebra: bone
    assert abs(hu[5] - 89) < 5


def test_dicom_seg_reader(dcmqi):
    seg = LoadImage(image_only=True, ensure_channel_first=True)(
        str(dcmqi / "seg" / "liver_seg_DICOM-SEG.dcm"), reader=DicomSegReader()
    )
    assert seg.shape == (1, 512, 512, 3) and set(torch.unique(seg).tolist()) == {0.0, 1.0}
    assert seg.meta["labels"] == {"Liver": 1}


def test_single_dicom_file_is_one_slice(dcmqi):
    vol = _load_series(dcmqi / "dicom" / "02.dcm")
    assert vol.shape == (1, 512, 512, 1)
    assert vol.affine[2, 3].item() == pytest.approx(-127.69, abs=1e-3)


def test_several_series_need_a_choice(tmp_path, totalseg_dir, dcmqi):
    folder = tmp_path / "mixed"
    _copy(totalseg_dir, folder, sorted(os.listdir(totalseg_dir))[:4])
    _copy(dcmqi / "dicom", folder)
    with pytest.raises(ValueError, match="holds 2 DICOM series") as err:
        _load_series(folder)
    assert "noUID:" in str(err.value) and "1.2.392.200103" in str(err.value)
    uid = "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
    assert _load_series(folder, series_uid=uid).shape == (1, 512, 512, 3)
    key = next(s.key for s in find_dicom_series(folder) if not s.series_uid)
    assert _load_series(folder, series_uid=key).shape == (1, 512, 512, 4)
    with pytest.raises(ValueError, match="no series with SeriesInstanceUID '1.2.3'"):
        _load_series(folder, series_uid="1.2.3")


def test_missing_slice_is_an_error_naming_the_files(tmp_path, totalseg_dir):
    names = sorted(os.listdir(totalseg_dir))
    series = find_dicom_series(totalseg_dir)[0]
    dropped = os.path.basename(series.files[7])
    folder = _copy(totalseg_dir, tmp_path / "gap", [n for n in names if n != dropped])
    with pytest.raises(ValueError, match=r"1 slice\(s\) missing between") as err:
        _load_series(folder)
    assert os.path.basename(series.files[6]) in str(err.value) and os.path.basename(series.files[8]) in str(err.value)


def test_duplicate_position_is_an_error(tmp_path, dcmqi):
    folder = _copy(dcmqi / "dicom", tmp_path / "dup")
    shutil.copy(folder / "02.dcm", folder / "02_copy.dcm")
    with pytest.raises(ValueError, match="share a position"):
        _load_series(folder)


def test_irregular_spacing_is_an_error(tmp_path, dcmqi):
    folder = _copy(dcmqi / "dicom", tmp_path / "irregular")
    _edit(folder / "01.dcm", ImagePositionPatient=[-235.199997, -226.800003, -126.19])
    with pytest.raises(ValueError, match="irregular step of 1.500 mm"):
        _load_series(folder)


@pytest.mark.parametrize(
    "tags, message",
    [
        ({"PixelSpacing": [0.7, 0.7]}, "different PixelSpacing"),
        ({"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}, "different orientations"),
    ],
)
def test_inconsistent_slice_geometry_is_an_error(tmp_path, dcmqi, tags, message):
    folder = _copy(dcmqi / "dicom", tmp_path / "inconsistent")
    _edit(folder / "02.dcm", **tags)
    with pytest.raises(ValueError, match=message) as err:
        _load_series(folder)
    assert "02.dcm" in str(err.value)


def test_gantry_tilt_warns_and_keeps_world_positions(tmp_path, dcmqi):
    folder = _copy(dcmqi / "dicom", tmp_path / "tilt")
    for name, k in (("02.dcm", 1), ("01.dcm", 2)):  # y moves 0.3 mm per slice: a 16.7 degree tilt
        ds = pydicom.dcmread(folder / name)
        ds.ImagePositionPatient = [-235.199997, -226.800003 + 0.3 * k, -128.690002 + k]
        ds.save_as(folder / name)
    with pytest.warns(UserWarning, match="gantry tilt"):
        vol = _load_series(folder)
    np.testing.assert_allclose(vol.affine[:3, 2].numpy(), [0.0, -0.3, 1.0], atol=1e-5)  # RAS: y negated


def test_truncated_file_is_an_error_naming_it(tmp_path, dcmqi):
    folder = _copy(dcmqi / "dicom", tmp_path / "truncated")
    data = (folder / "02.dcm").read_bytes()
    (folder / "02.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="02.dcm"):
        _load_series(folder)


def test_damaged_header_is_skipped_with_a_warning_and_the_gap_reported(tmp_path, totalseg_dir, dcmqi):
    series = find_dicom_series(totalseg_dir)[0]
    folder = _copy(totalseg_dir, tmp_path / "damaged")
    damaged = folder / os.path.basename(series.files[10])
    damaged.write_bytes(damaged.read_bytes()[:300])
    with pytest.warns(UserWarning, match=damaged.name):
        with pytest.raises(ValueError, match=r"1 slice\(s\) missing"):
            _load_series(folder)
    # with only two slices left the spacing cannot tell; the InstanceNumber jump is reported
    folder = _copy(dcmqi / "dicom", tmp_path / "damaged_3slice")
    (folder / "02.dcm").write_bytes((folder / "02.dcm").read_bytes()[:300])
    with pytest.warns(UserWarning) as record:
        vol = _load_series(folder)
    messages = " ".join(str(w.message) for w in record)
    assert "02.dcm" in messages and "InstanceNumber jumps from 3" in messages
    assert vol.shape == (1, 512, 512, 2)


def test_empty_and_non_dicom_folders(tmp_path, dcmqi):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM image series found in .*empty"):
        _load_series(tmp_path / "empty")
    folder = _copy(dcmqi / "dicom", tmp_path / "with_notes")
    (folder / "README.txt").write_text("not DICOM")
    (folder / ".DS_Store").write_bytes(b"\0" * 10)
    assert _load_series(folder).shape == (1, 512, 512, 3)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_dicom_series(tmp_path / "nowhere")


def test_series_geometry_orders_shuffled_headers(dcmqi):
    files = [str(dcmqi / "dicom" / n) for n in ("02.dcm", "01.dcm", "03.dcm")]
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        order, affine = series_geometry(headers, files)
    assert [os.path.basename(files[i]) for i in order] == ["03.dcm", "02.dcm", "01.dcm"]
    np.testing.assert_allclose(affine[:3, 2], [0, 0, 1], atol=1e-6)  # LPS, one 1 mm step up per slice


def test_reader_verify_suffix(dcmqi):
    reader = DicomSeriesReader()
    assert reader.verify_suffix(str(dcmqi / "dicom")) and reader.verify_suffix(str(dcmqi / "dicom" / "01.dcm"))
    assert not reader.verify_suffix(str(dcmqi / "seg" / "liver_seg_DICOM-SEG.dcm"))
    assert DicomSegReader().verify_suffix(str(dcmqi / "seg" / "liver_seg_DICOM-SEG.dcm"))
