"""Geometry is required, not invented, and a header's size must fit its file: copies of the real CT NIfTI (and the
real NRRD label) with damaged headers are refused by LoadVolume before any pixel is read, naming the file and the
reason, unless ``assume_spacing`` gives the voxel size; a good file keeps its own affine."""

from __future__ import annotations

import gzip
import shutil
import struct

import nibabel as nib
import numpy as np
import pytest
import torch
from pyconv_monai.data import check_nifti_header, parse_spacing
from pyconv_monai.transforms import LoadVolume, LoadVolumed
from pyconv_monai.writers import write_nifti_mask

PIXDIM_OFFSET = 76  # NIfTI-1: float32 pixdim[8]
DIM_OFFSET = 40  # int16 dim[8]


@pytest.fixture(scope="module")
def ct(shared_data):
    return nib.load(shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz")


def _save(ct, path, header=None, affine=None):
    header = header if header is not None else ct.header
    nib.save(nib.Nifti1Image(np.asanyarray(ct.dataobj), affine, header=header), path)
    return path


def _patch(path, offset, fmt, *values):
    """Write ``values`` into the header of an uncompressed .nii, as a broken converter would (nibabel fixes them)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<" + fmt, *values))
    return path


def test_good_nifti_keeps_its_own_affine(ct, shared_data, tmp_path):
    path = shared_data / "ct_nifti_totalseg" / "example_ct_sm.nii.gz"
    assert check_nifti_header(path) is None
    vol = LoadVolume(assume_spacing="1,1,1")(path)  # an override does not touch a file with a geometry
    np.testing.assert_allclose(np.asarray(vol.meta["original_affine"]), ct.affine, atol=1e-5)
    assert "assumed_spacing" not in vol.meta
    affine = np.asarray(vol.meta["original_affine"])
    mask = write_nifti_mask(np.zeros(ct.shape, np.uint8), affine, tmp_path / "m.nii.gz")
    np.testing.assert_allclose(nib.load(mask).affine, ct.affine, atol=1e-4)  # the written mask carries it


def test_no_geometry_and_zero_pixdim_refused(ct, tmp_path):
    header = ct.header.copy()
    header.set_sform(None, code=0)
    header.set_qform(None, code=0)
    path = _save(ct, tmp_path / "nogeom.nii", header)
    _patch(path, PIXDIM_OFFSET + 4, "3f", 0.0, 0.0, 0.0)  # zero pixdim (nibabel writes 1 there)
    with pytest.raises(ValueError, match=r"nogeom.nii: no usable voxel geometry: .*qform_code and sform_code are 0"):
        LoadVolume()(path)
    with pytest.raises(ValueError, match="assume_spacing"):
        LoadVolumed(keys="image")({"image": str(path)})
    with pytest.warns(UserWarning, match=r"voxel size assumed 3x3x3 mm"):
        vol = LoadVolume(assume_spacing="3,3,3")(path)
    np.testing.assert_allclose(vol.pixdim.numpy(), [3, 3, 3])
    assert vol.meta["assumed_spacing"] == [3.0, 3.0, 3.0]
    assert "qform_code and sform_code are 0" in vol.meta["geometry_note"]
    # the volume in mL is the true one again: 3 mm voxels, as the original file
    assert abs(float(torch.linalg.det(vol.affine[:3, :3]))) == pytest.approx(abs(np.linalg.det(ct.affine[:3, :3])))


def test_qform_with_zero_pixdim_refused(ct, tmp_path):
    header = ct.header.copy()
    header.set_sform(None, code=0)
    header.set_qform(ct.affine, code=1)
    path = _save(ct, tmp_path / "zeroq.nii", header)
    _patch(path, PIXDIM_OFFSET + 4, "3f", 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"zeroq.nii: .*its qform \(qform_code 1\) has voxel sizes \(pixdim\) 0x0x0"):
        LoadVolume()(path)


def test_identity_affine_on_a_3mm_volume_refused_where_the_header_says_so(ct, tmp_path):
    """The 3 mm CT relabelled with an identity sform while pixdim still says 3 mm: refused. Saved again by nibabel
    (pixdim rewritten to 1 mm) it is a valid 1 mm volume for every reader: not detectable (docs/robustness.md)."""
    header = ct.header.copy()
    header.set_sform(np.eye(4), code=2)
    path = _save(ct, tmp_path / "relabelled.nii.gz", header)
    assert nib.load(path).header["pixdim"][1:4].tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match=r"relabelled.nii.gz: .*pixdim gives 3x3x3 mm voxels but its sform 1x1x1 mm"):
        LoadVolume()(path)
    header.set_qform(ct.affine, code=1)  # qform and sform disagree
    path = _save(ct, tmp_path / "disagree.nii.gz", header)
    with pytest.raises(ValueError, match=r"disagree.nii.gz: .*qform gives 3x3x3 mm voxels but its sform 1x1x1 mm"):
        LoadVolume()(path)
    resaved = _save(ct, tmp_path / "resaved.nii.gz", affine=np.eye(4))
    assert check_nifti_header(resaved) is None  # undetectable, documented


def test_singular_sform_refused(ct, tmp_path):
    header = ct.header.copy()
    header.set_qform(None, code=0)
    path = _save(ct, tmp_path / "singular.nii", header)
    _patch(path, 280, "12f", *np.diag([3.0, 3.0, 0.0, 1.0])[:3].ravel())  # srow_x, srow_y, srow_z
    assert int(nib.load(path).header["sform_code"]) == 2
    with pytest.raises(ValueError, match=r"singular.nii: .*sform \(sform_code 2\) is singular"):
        LoadVolume()(path)
    vol = LoadVolume(assume_spacing=(3, 3, 3))(path)
    np.testing.assert_allclose(vol.pixdim.numpy(), [3, 3, 3])


def test_header_larger_than_the_file_refused_before_reading(ct, tmp_path):
    path = _save(ct, tmp_path / "huge.nii")
    _patch(path, DIM_OFFSET, "4h", 3, 30000, 30000, 10)  # 9e9 voxels: more than MAX_VOXELS
    with pytest.raises(ValueError, match=r"huge.nii: the NIfTI header claims 30000x30000x10 = 9,000,000,000 voxels"):
        LoadVolume()(path)
    _patch(path, DIM_OFFSET, "4h", 3, 3000, 3000, 10)  # 9e7 voxels: under the limit, far more than the file
    with pytest.raises(ValueError, match=r"huge.nii: the NIfTI header claims 3000x3000x10 voxels .* but the file has"):
        LoadVolume()(path)
    _patch(path, DIM_OFFSET, "4h", 3, 30000, 3000, 10)  # 1.8 GB of int16: more than the .gz below can hold
    with open(path, "rb") as f, gzip.open(tmp_path / "huge.nii.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    with pytest.raises(ValueError, match=r"huge.nii.gz: the NIfTI header claims 30000x3000x10 voxels .*than a gzip"):
        LoadVolume()(tmp_path / "huge.nii.gz")


def test_nrrd_header_larger_than_its_data_refused(shared_data, tmp_path):
    src = shared_data / "ct_dicom_dcmqi_3slice" / "seg" / "liver_spine_seg.nrrd"
    data = src.read_bytes()
    bad = tmp_path / "big.nrrd"
    bad.write_bytes(data.replace(b"sizes: 512 512 3", b"sizes: 100000 100000 10", 1))
    with pytest.raises(ValueError, match=r"big.nrrd: the NRRD header claims 100000x100000x10"):
        LoadVolume()(bad)
    assert LoadVolume()(src).shape[1:] == (512, 512, 3)  # the real file still loads


def test_parse_spacing():
    assert parse_spacing("1,1,3") == parse_spacing("1x1x3") == parse_spacing([1, 1, 3]) == (1.0, 1.0, 3.0)
    assert parse_spacing(None) is None and parse_spacing("") is None
    for bad in ("1,1", "a,b,c", "1,0,3", "1,1,nan"):
        with pytest.raises(ValueError, match="assume_spacing must be three positive voxel sizes"):
            parse_spacing(bad)


def test_tiff_with_mixed_page_sizes_refused(shared_data, tmp_path):
    """Pages 512/256/512 of the real EM stack: refused everywhere, never read as its first page (1 slice)."""
    import tifffile
    from pyconv_monai.data import tiff_num_pages
    from pyconv_monai.transforms import LoadSlice2D

    stack = tifffile.imread(shared_data / "isbi2012_em" / "train-volume.tif")
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as w:
        w.write(stack[0])
        w.write(stack[1][::2, ::2])
        w.write(stack[2])
    message = r"mixed.tif: its pages do not form one stack: 3 groups of pages .*512x512.*256x256"
    with pytest.raises(ValueError, match=message):
        tiff_num_pages(path)
    with pytest.raises(ValueError, match=message):
        LoadVolume()(path)
    with pytest.raises(ValueError, match=message):
        LoadSlice2D()(path, 1)
    same = tmp_path / "same.tif"
    tifffile.imwrite(same, stack[:3], photometric="minisblack")
    assert tiff_num_pages(same) == 3 and LoadVolume()(same).shape == (1, 512, 512, 3)


def test_dicom_series_without_pixel_spacing_refused(shared_data, tmp_path):
    """A copy of the real 3-slice CT series without PixelSpacing: refused (was: 1 mm assumed with a warning), or
    loaded with the assumed pixel size; the slice step still comes from the positions (1 mm here)."""
    import pydicom

    folder = tmp_path / "ct"
    folder.mkdir()
    for src in sorted((shared_data / "ct_dicom_dcmqi_3slice" / "dicom").iterdir()):
        ds = pydicom.dcmread(src)
        del ds.PixelSpacing
        ds.save_as(folder / src.name)
    with pytest.raises(ValueError, match=r"ct: no usable voxel geometry: its headers have no PixelSpacing"):
        LoadVolume(axcodes=None)(folder)
    with pytest.warns(UserWarning, match=r"voxel size assumed 0.8x0.8x9 mm \(no PixelSpacing"):
        vol = LoadVolume(axcodes=None, assume_spacing="0.8,0.8,9")(folder)
    np.testing.assert_allclose(vol.pixdim.numpy(), [0.8, 0.8, 1.0], atol=1e-5)
    assert vol.meta["geometry_note"].startswith("voxel size assumed")
    real = LoadVolume(axcodes=None, assume_spacing="0.8,0.8,9")(shared_data / "ct_dicom_dcmqi_3slice" / "dicom")
    assert "assumed_spacing" not in real.meta  # a complete header keeps its own geometry
