"""DICOM SEG output: readable by highdicom and pydicom, referencing the source series and instances."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pyconv_monai.data import DicomSeriesReader
from pyconv_monai.data.geometry import geometry_mismatch
from pyconv_monai.transforms import LoadVolume
from pyconv_monai.writers import series_headers, write_dicom_seg

LIVER = {"label": "Liver", "category": ["91772007", "SCT", "Organ"], "type": ["10200004", "SCT", "Liver"]}


def _series(folder):
    data = DicomSeriesReader().read(str(folder))
    return data.files, data.headers


def test_seg_of_the_dcmqi_liver_label(shared_data, tmp_path):
    """The real liver label written as SEG reads back, voxel for voxel, on the CT's grid, with references."""
    import highdicom as hd

    folder = shared_data / "ct_dicom_dcmqi_3slice"
    files, headers = _series(folder / "dicom")
    ct = LoadVolume(axcodes=None)(str(folder / "dicom"))
    label_path = folder / "seg" / "liver_spine_seg.nii.gz"
    label = LoadVolume(axcodes=None)(str(label_path))
    assert geometry_mismatch(label, ct) is None  # same grid: NIfTI voxel (i, j, k) is DICOM (column, row, slice)
    liver = label[0].numpy() == 1
    frames = liver.transpose(2, 1, 0)  # (slices, rows, columns) in the series' slice order
    path = tmp_path / "liver_seg.dcm"
    notes = write_dicom_seg(frames, headers, path, LIVER)
    assert notes == []

    seg = hd.seg.segread(path)
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == headers[0].SeriesInstanceUID != seg.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == {h.SOPInstanceUID for h in headers}
    desc = seg.SegmentSequence[0]
    assert desc.SegmentLabel == "Liver" and desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert seg.SegmentationType == "BINARY"
    pixels = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers], combine_segments=True)
    np.testing.assert_array_equal(pixels > 0, frames)

    ds = pydicom.dcmread(path)  # plain pydicom reads it too
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    # in world coordinates (both brought to RAS) the SEG read back is the label, on the same grid
    seg_ras, label_ras = LoadVolume(axcodes="RAS")(str(path)), LoadVolume(axcodes="RAS")(str(label_path))
    assert geometry_mismatch(seg_ras, label_ras) is None
    np.testing.assert_array_equal(seg_ras[0].numpy() > 0, label_ras[0].numpy() == 1)

    with pytest.raises(FileExistsError):
        write_dicom_seg(frames, headers, path, LIVER)
    with pytest.raises(ValueError, match="does not match the source"):
        write_dicom_seg(frames[:2], headers, tmp_path / "short.dcm", LIVER)
    with pytest.raises(ValueError, match="segment type must be"):
        write_dicom_seg(frames, headers, tmp_path / "bad.dcm", {"type": "Liver"})


def test_seg_of_a_series_without_uids(shared_data, tmp_path):
    """The JPEG 2000 series has empty Study/Series/SOP UIDs in its data sets: instances are referenced by their
    file-meta UIDs, the missing study/series UIDs get stable stand-ins, and notes say so."""
    import highdicom as hd

    files, headers = _series(shared_data / "ct_dicom_totalseg" / "dicom")
    assert not headers[0].get("SeriesInstanceUID") and not headers[0].get("SOPInstanceUID")
    frames = np.zeros((len(headers), 512, 512), bool)
    frames[3:7, 200:300, 100:250] = True
    notes = write_dicom_seg(frames, headers, tmp_path / "a.dcm", LIVER)
    assert any("StudyInstanceUID" in n for n in notes) and any("SeriesInstanceUID" in n for n in notes)
    assert any("file meta" in n for n in notes)
    assert not headers[0].get("SOPInstanceUID")  # the caller's headers are not changed
    seg = hd.seg.segread(tmp_path / "a.dcm")
    meta_uids = [pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for f in files]
    ref = seg.ReferencedSeriesSequence[0]
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(meta_uids)
    pixels = seg.get_pixels_by_source_instance(meta_uids, combine_segments=True)
    np.testing.assert_array_equal(pixels > 0, frames)
    write_dicom_seg(frames, headers, tmp_path / "b.dcm", LIVER)
    again = pydicom.dcmread(tmp_path / "b.dcm")
    assert again.StudyInstanceUID == seg.StudyInstanceUID  # stand-ins are stable across runs
    assert again.SOPInstanceUID != seg.SOPInstanceUID


def test_empty_mask_still_gives_a_valid_seg(shared_data, tmp_path):
    import highdicom as hd

    _, headers = _series(shared_data / "ct_dicom_dcmqi_3slice" / "dicom")
    write_dicom_seg(np.zeros((3, 512, 512), bool), headers, tmp_path / "empty.dcm", LIVER)
    seg = hd.seg.segread(tmp_path / "empty.dcm")
    assert int(seg.NumberOfFrames) == 3


def test_series_headers_follow_the_loaded_slices(shared_data):
    """The headers read from a series' files, in any order, come in the order of the loaded volume's slices (the
    reader's), checked against its affine; another grid (a reoriented volume) is refused."""
    folder = shared_data / "ct_dicom_totalseg" / "dicom"
    files, headers = _series(folder)
    volume = LoadVolume(axcodes=None)(str(folder))
    shuffled = list(np.random.default_rng(0).permutation(files))
    got = series_headers(shuffled, np.asarray(volume.affine))
    assert [h.SOPInstanceUID for h in got] == [h.SOPInstanceUID for h in headers]
    affine = np.asarray(volume.affine, float)
    for k, h in enumerate(got):  # header k lies where the volume's slice k lies (its first pixel, in RAS)
        np.testing.assert_allclose(np.asarray(h.ImagePositionPatient, float) * (-1, -1, 1), affine[:3, 2] * k
                                   + affine[:3, 3], atol=1e-3)  # fmt: skip
    with pytest.raises(ValueError, match="not the series' stored geometry"):
        series_headers(files, np.asarray(LoadVolume(axcodes="ALS")(str(folder)).affine))
