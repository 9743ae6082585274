"""LoadSlice2Dd/LoadVolumed on every real format (pixel for pixel against the format's own library), and every bad
input: each error names the file and the problem."""

import copy
import gzip
import os
import pickle
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
import torch
from monai.data import CacheDataset, DataLoader, get_track_meta, set_track_meta
from monai.transforms import Compose
from PIL import Image
from pyconv_monai.data import find_dicom_series, load_datalist
from pyconv_monai.transforms import BinarizeLabeld, LoadSlice2D, LoadSlice2Dd, LoadVolume, LoadVolumed


@pytest.fixture(scope="module")
def loader():
    return LoadSlice2Dd()


def test_isbi_pages(shared_data, loader):
    folder = shared_data / "isbi2012_em"
    out = loader({"image": str(folder / "train-volume.tif"), "label": str(folder / "train-labels.tif"), "slice": 7})
    np.testing.assert_array_equal(out["image"][0].numpy(), tifffile.imread(folder / "train-volume.tif", key=7))
    np.testing.assert_array_equal(out["label"][0].numpy(), tifffile.imread(folder / "train-labels.tif", key=7))
    assert out["image"].dtype == torch.float32 and out["image"].meta["slice"] == 7


def test_lung_int16_hu_rows_first(shared_data, loader):
    item = load_datalist(shared_data / "lung_ct_2d")[3]
    out = loader(item)
    image = tifffile.imread(item["image"])
    assert image.dtype == np.int16
    np.testing.assert_array_equal(out["image"][0].numpy(), image)  # (H, W) as stored: not transposed
    np.testing.assert_array_equal(out["label"][0].numpy(), tifffile.imread(item["label"]))
    assert float(out["image"].min()) < -1000  # HU kept, not rescaled


def test_liver_png_kept_as_stored(shared_data, loader):
    item = load_datalist(shared_data / "liver_ct_2d")[0]
    out = loader(item)
    np.testing.assert_array_equal(out["image"][0].numpy(), np.array(Image.open(item["image"])))
    np.testing.assert_array_equal(out["label"][0].numpy(), np.array(Image.open(item["label"])))


def test_nifti_slice_is_radiological_display(shared_data, loader):
    folder = shared_data / "ct_nifti_totalseg"
    out = loader(
        {"image": str(folder / "example_ct_sm.nii.gz"), "label": str(folder / "example_seg.nii.gz"), "slice": 12}
    )
    data = np.asanyarray(nib.load(folder / "example_ct_sm.nii.gz").dataobj)  # RAS: i to the right, j to the front
    expected = data[::-1, ::-1, 12].T  # rows front to back, columns patient right to left
    np.testing.assert_array_equal(out["image"][0].numpy(), expected)
    assert out["image"].shape == out["label"].shape == (1, 101, 122)


@pytest.mark.parametrize("k", [0, 13, 19])
def test_dicom_slice_is_the_stored_pixel_matrix_in_hu(shared_data, loader, k):
    folder = shared_data / "ct_dicom_totalseg"
    item = {"image": str(folder / "dicom"), "label": str(folder / "labels" / "example_seg_dicom.nii.gz"), "slice": k}
    out = loader(item)
    files = find_dicom_series(folder / "dicom")[0].files
    ds = pydicom.dcmread(files[k])
    assert float(ds.ImagePositionPatient[2]) == -804.5 + 2 * k
    # axial DICOM rows/columns are radiological display already: PLS keeps them as stored
    np.testing.assert_array_equal(out["image"][0].numpy(), ds.pixel_array.astype(np.float32) - 1024.0)
    assert out["label"].shape == (1, 512, 512)


def test_dicom_seg_label_slice(shared_data, loader):
    folder = shared_data / "ct_dicom_dcmqi_3slice"
    out = loader({"image": str(folder / "dicom"), "label": str(folder / "seg" / "liver_seg_DICOM-SEG.dcm"), "slice": 0})
    liver = out["label"][0] == 1
    assert liver.sum() > 10000 and 0 < float(out["image"][0][liver].mean()) < 100


def test_array_transforms_and_volume(shared_data):
    folder = shared_data / "isbi2012_em"
    page = LoadSlice2D()(folder / "train-volume.tif", 3)
    stack = LoadVolume()(folder / "train-volume.tif")
    assert page.shape == (1, 512, 512) and stack.shape == (1, 512, 512, 25)
    torch.testing.assert_close(page.as_tensor(), stack[..., 3].as_tensor())
    assert LoadSlice2D()(shared_data / "liver_ct_2d" / "train" / "001.png").shape == (1, 512, 512)


def test_pipeline_in_cache_dataset_and_worker_processes(shared_data):
    items = load_datalist(shared_data / "isbi2012_em")[:4]
    transform = Compose([LoadSlice2Dd(), BinarizeLabeld("label")])
    ds = CacheDataset(items, transform, num_workers=2, progress=False)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=2)))
    assert batch["image"].shape == (4, 1, 512, 512) and set(torch.unique(batch["label"]).tolist()) == {0.0, 1.0}
    used = LoadSlice2Dd()
    used(items[0])  # its cache now holds volumes: copies and pickles (to worker processes) start empty
    assert isinstance(pickle.loads(pickle.dumps(used)), LoadSlice2Dd)
    assert isinstance(copy.deepcopy(used), LoadSlice2Dd)


# ---- bad input: synthetic files under tmp_path ----


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return str(path)


def test_missing_and_unsupported_files(tmp_path, loader):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        loader({"image": str(tmp_path / "missing.png"), "label": str(tmp_path / "missing_mask.png")})
    (tmp_path / "scan.xyz").write_bytes(b"abc")
    with pytest.raises(ValueError, match=r"scan\.xyz: unsupported file type; supported: DICOM series"):
        LoadSlice2D()(tmp_path / "scan.xyz")
    with pytest.raises(TypeError, match=r"item\['label'\] must be a file or folder path"):
        loader({"image": _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8)), "label": 3})


@pytest.mark.parametrize("suffix", [".png", ".tif", ".nii.gz", ".dcm"])
def test_truncated_files(tmp_path, shared_data, suffix):
    path = tmp_path / f"image{suffix}"
    if suffix == ".png":
        _png(path, np.random.randint(0, 255, (64, 64), np.uint8))
    elif suffix == ".tif":
        tifffile.imwrite(path, np.random.randint(0, 255, (64, 64), np.uint8), compression="zlib")
    elif suffix == ".nii.gz":
        _nifti(path, np.random.rand(16, 16, 4).astype(np.float32))
    else:
        path.write_bytes((shared_data / "ct_dicom_dcmqi_3slice" / "dicom" / "01.dcm").read_bytes())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=f"image{suffix.replace('.', r'.')}.*(complete|read|truncat)"):
        LoadSlice2D()(path, 0)


def test_garbage_file(tmp_path):
    (tmp_path / "noise.png").write_bytes(os.urandom(500))
    with pytest.raises(ValueError, match=r"noise\.png: cannot read the image"):
        LoadSlice2D()(tmp_path / "noise.png")
    (tmp_path / "noise.nii").write_bytes(os.urandom(500))
    with pytest.raises(ValueError, match=r"noise\.nii: cannot read the image"):
        LoadSlice2D()(tmp_path / "noise.nii")
    with gzip.open(tmp_path / "empty.nii.gz", "wb"):
        pass
    with pytest.raises(ValueError, match=r"empty\.nii\.gz"):
        LoadSlice2D()(tmp_path / "empty.nii.gz")


def test_rgb_is_refused_unless_gray(tmp_path, loader):
    rgb = np.random.randint(0, 255, (16, 16, 3), np.uint8)
    mask = _png(tmp_path / "m.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.png: a colour image \(3 channels with different values\)"):
        loader({"image": _png(tmp_path / "rgb.png", rgb), "label": mask})
    gray_rgb = np.repeat(rgb[..., :1], 3, axis=2)  # the original liver PNGs: RGB with equal channels
    out = loader({"image": _png(tmp_path / "gray_rgb.png", gray_rgb), "label": mask})
    np.testing.assert_array_equal(out["image"][0].numpy(), rgb[..., 0])
    rgba = np.concatenate([gray_rgb, np.full((16, 16, 1), 255, np.uint8)], axis=2)
    assert loader({"image": _png(tmp_path / "rgba.png", rgba), "label": mask})["image"].shape == (1, 16, 16)
    rgba[0, 0, 3] = 10  # a real alpha channel
    with pytest.raises(ValueError, match="colour image"):
        loader({"image": _png(tmp_path / "rgba2.png", rgba), "label": mask})


def test_nan_inf_raise_or_fill(tmp_path):
    array = np.random.rand(8, 8, 3).astype(np.float32)
    array[1, 2, 0], array[3, 3, 2] = np.nan, np.inf
    path = _nifti(tmp_path / "nan.nii.gz", array)
    with pytest.raises(ValueError, match=r"nan\.nii\.gz: 2 NaN/Inf voxel\(s\)"):
        LoadSlice2D()(path, 0)
    with pytest.warns(UserWarning, match=r"replaced 2 NaN/Inf"):
        out = LoadVolume(nonfinite="fill")(path)
    assert torch.isfinite(out).all() and float(out.min()) == pytest.approx(float(np.nanmin(array[np.isfinite(array)])))
    tif = tmp_path / "inf.tif"
    tifffile.imwrite(tif, np.array([[1.0, np.inf], [0.0, 2.0]], np.float32))
    with pytest.raises(ValueError, match=r"inf\.tif: 1 NaN/Inf"):
        LoadSlice2D()(tif)


def test_image_label_shape_mismatch_names_both(tmp_path, loader):
    image = _png(tmp_path / "img.png", np.zeros((16, 16), np.uint8))
    label = _png(tmp_path / "img_mask.png", np.zeros((16, 8), np.uint8))
    with pytest.raises(
        ValueError, match=r"img_mask\.png: slice shape \(16, 8\) does not match \(16, 16\) of .*img\.png"
    ):
        loader({"image": image, "label": label})


def test_volume_geometry_mismatch_raises_or_resamples(tmp_path):
    image = _nifti(tmp_path / "ct.nii.gz", np.random.rand(8, 8, 4).astype(np.float32))
    label_array = np.zeros((8, 8, 4), np.uint8)
    label_array[2:5, 2:5, 1] = 1
    shifted = np.eye(4)
    shifted[2, 3] = 1.0  # one slice higher: same shape, wrong place
    label = _nifti(tmp_path / "seg.nii.gz", label_array, shifted)
    with pytest.raises(ValueError, match=r"seg\.nii\.gz does not line up with .*ct\.nii\.gz: the voxel grids are 1 mm"):
        LoadSlice2Dd()({"image": image, "label": label, "slice": 1})
    with pytest.raises(ValueError, match="resample_labels=True"):
        LoadVolumed()({"image": image, "label": label})
    with pytest.warns(UserWarning, match="resampled onto it"):
        out = LoadSlice2Dd(resample_labels=True)({"image": image, "label": label, "slice": 2})
    assert float(out["label"].sum()) == 9  # the label's slice 1 lies at the image's slice 2
    other = _nifti(tmp_path / "small.nii.gz", np.zeros((8, 6, 4), np.uint8))
    with pytest.raises(ValueError, match=r"spatial shape \(6, 8, 4\) differs from \(8, 8, 4\)"):
        LoadVolumed()({"image": image, "label": other})


def test_slice_index_errors(tmp_path, shared_data):
    volume = str(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz")
    with pytest.raises(ValueError, match=r"example_ct_sm\.nii\.gz holds 30 slices; the item must give which one"):
        LoadSlice2D()(volume)
    with pytest.raises(ValueError, match=r"slice 30 out of range; it holds 30 slice\(s\)"):
        LoadSlice2D()(volume, 30)
    stack = str(shared_data / "isbi2012_em" / "train-volume.tif")
    with pytest.raises(ValueError, match=r"train-volume\.tif: page 25 out of range: the file has 25 page"):
        LoadSlice2D()(stack, 25)
    with pytest.raises(ValueError, match=r"train-volume\.tif holds 25 slices"):
        LoadSlice2D()(stack)
    png = _png(tmp_path / "one.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"one\.png: slice 1 out of range; it is a single 2D image"):
        LoadSlice2D()(png, 1)


def test_multichannel_volume_is_refused(tmp_path):
    path = _nifti(tmp_path / "two_echoes.nii.gz", np.zeros((4, 4, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"two_echoes\.nii\.gz: 2 channels"):
        LoadVolume()(path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        LoadVolume(nonfinite="ignore")
    with pytest.raises(ValueError, match="axcodes must be three orientation letters"):
        LoadSlice2Dd(axcodes="PLX")


def test_uncompressed_nifti_and_nrrd_volumes(tmp_path, shared_data):
    source = shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz"
    nii = tmp_path / "ct.nii"
    nib.save(nib.load(source), nii)
    torch.testing.assert_close(LoadSlice2D()(nii, 4).as_tensor(), LoadSlice2D()(source, 4).as_tensor())
    nrrd = shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nrrd"
    nifti = shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nii.gz"
    torch.testing.assert_close(LoadSlice2D()(nrrd, 2).as_tensor(), LoadSlice2D()(nifti, 2).as_tensor())


def test_threads_share_one_load(shared_data):
    volume = LoadVolume(cache_size=2)
    calls = []
    read = volume._load
    volume._load = lambda *a: calls.append(a) or read(*a)
    path = str(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz")
    with ThreadPoolExecutor(4) as pool:
        shapes = list(pool.map(lambda _: volume(path).shape, range(8)))
    assert len(calls) == 1 and set(shapes) == {(1, 101, 122, 30)}


def test_geometry_is_checked_with_metadata_tracking_switched_off(tmp_path, shared_data):
    """``set_track_meta(False)`` (a common speed-up) gives plain tensors, but the loaders still check geometry."""
    folder = shared_data / "ct_dicom_dcmqi_3slice"
    set_track_meta(False)
    try:
        out = LoadSlice2Dd()(
            {"image": str(folder / "dicom"), "label": str(folder / "seg" / "liver_spine_seg.nrrd"), "slice": 1}
        )
        assert type(out["image"]) is torch.Tensor and out["image"].shape == (1, 512, 512)
        assert 0 < float(out["image"][out["label"] == 1].mean()) < 100
        shifted = tmp_path / "shifted.nii.gz"
        seg = nib.load(folder / "seg" / "liver_spine_seg.nii.gz")
        affine = seg.affine.copy()
        affine[2, 3] += 1.0
        nib.save(nib.Nifti1Image(np.asanyarray(seg.dataobj), affine), shifted)
        with pytest.raises(ValueError, match="does not line up"):
            LoadVolumed()({"image": str(folder / "dicom"), "label": str(shifted)})
        assert get_track_meta() is False
    finally:
        set_track_meta(True)


def test_a_dicom_series_given_by_its_files(tmp_path, shared_data):
    """The files of one series (as ``find_cases`` lists them, in any order and folders) load as its folder does,
    with the series' modality in the meta; a list holding another kind of file is refused, naming it."""
    folder = shared_data / "ct_dicom_dcmqi_3slice" / "dicom"
    whole = LoadVolume(axcodes=None)(str(folder))
    files = sorted(str(p) for p in folder.iterdir())[::-1]
    (tmp_path / "a").mkdir()
    moved = str(tmp_path / "a" / os.path.basename(files[0]))
    os.symlink(files[0], moved)
    d = LoadVolumed("image", axcodes=None)({"image": [moved, *files[1:]], "series_uid": None})
    assert torch.equal(d["image"].as_tensor(), whole.as_tensor())
    torch.testing.assert_close(d["image"].affine, whole.affine)
    assert d["image"].meta["modality"] == "CT"
    oriented = LoadVolume(axcodes="PLS")(files)
    assert torch.equal(oriented.as_tensor(), LoadVolume(axcodes="PLS")(str(folder)).as_tensor())
    png = _png(tmp_path / "slice.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"slice\.png: not a DICOM image file"):
        LoadVolume()([*files, png])
    with pytest.raises(FileNotFoundError, match="gone.dcm"):
        LoadVolume()([*files, str(tmp_path / "gone.dcm")])
    with pytest.raises(ValueError, match="empty list"):
        LoadVolumed("image")({"image": []})
