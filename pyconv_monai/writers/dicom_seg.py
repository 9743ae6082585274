# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""A binary mask as a DICOM Segmentation (SEG) object that references its source CT series, written with highdicom.

The SEG goes into the study of its source series, references every source instance (``ReferencedSeriesSequence``
and, per frame, ``DerivationImageSequence``), and uses the source's frame of reference and plane positions, so that
3D Slicer (QuantitativeReporting), OHIF and PACS viewers show it on top of the series it was computed from.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
from pyconv_monai import __version__
from pyconv_monai.data import sorted_series_headers
from pyconv_monai.utils import atomic_write, lazy_module
from pydicom.uid import generate_uid

# pydicom.sr loads its concept dictionary on import (about 1.8 s on a busy 2-core machine): only when a SEG is written
sr_coding = lazy_module("pydicom.sr.coding")

__all__ = ["DEFAULT_SEGMENT", "reference_headers", "segment_description", "series_headers", "write_dicom_seg"]

logger = logging.getLogger(__name__)

# SNOMED CT "Organ" / "Lung"; bundles pass their own label and codes (see the bundles' inference.json "segment")
DEFAULT_SEGMENT: dict[str, Any] = {
    "label": "Segment",
    "category": ["91772007", "SCT", "Organ"],
    "type": ["91772007", "SCT", "Organ"],
}
# the generated study/series UIDs of sources without them are derived from this and the instance UIDs (stable)
_UID_SALT = "pyconv-monai source without UID"


def _code(value: Any, what: str) -> pydicom.sr.coding.Code:
    if isinstance(value, sr_coding.Code):
        return value
    if isinstance(value, Mapping):
        value = [value.get("value"), value.get("scheme", value.get("scheme_designator")), value.get("meaning")]
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3 or not all(value):
        raise ValueError(f"segment {what} must be [code value, coding scheme, meaning], e.g. ['10200004', 'SCT', "
                         f"'Liver'], got {value!r}.")  # fmt: skip
    return sr_coding.Code(str(value[0]), str(value[1]), str(value[2]))


def segment_description(segment: Mapping[str, Any] | None = None, algorithm: str = "pyconv-monai", version: str = ""):
    """The highdicom ``SegmentDescription`` of segment 1 (automatic, by an AI algorithm) from a plain dict.

    Args:
        segment: ``{"label": "Liver", "category": [value, scheme, meaning], "type": [value, scheme, meaning]}``
            (SNOMED CT codes as in DICOM CID 7150/7151); missing keys come from :data:`DEFAULT_SEGMENT`.
        algorithm: the algorithm's name (AlgorithmIdentificationSequence).
        version: the algorithm's version.

    Raises:
        ValueError: a code is not ``[value, scheme, meaning]``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    seg = {**DEFAULT_SEGMENT, **dict(segment or {})}
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=str(seg["label"])[:64] or "Segment",
        segmented_property_category=_code(seg["category"], "category"),
        segmented_property_type=_code(seg["type"], "type"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm[:64], version=(version or "unknown")[:64], family=codes.cid7162.ArtificialIntelligence
        ),
    )


def series_headers(
    files: Sequence[str | os.PathLike], affine: np.ndarray | None = None, atol: float = 1e-3
) -> list[pydicom.Dataset]:
    """The headers of a single-frame series' files (no pixel data), in the order of the loaded volume's slices.

    The headers come from :func:`pyconv_monai.data.sorted_series_headers`, the order in which
    :class:`pyconv_monai.data.DicomSeriesReader` (so :class:`pyconv_monai.transforms.LoadVolume`) stacks the files,
    so that header ``k`` is the source of slice ``k`` of the volume as stored (frame ``k`` of :func:`write_dicom_seg`).
    The reader already warned about the series' geometry (gantry tilt, InstanceNumber gaps); those warnings are not
    repeated.

    Args:
        files: the series' files, in any order.
        affine: the voxel-to-RAS affine of the loaded volume in its stored order ``(columns, rows, slices)``; when
            given, the headers' geometry must give the same affine (the volume was not reoriented or resampled).
        atol: tolerance of that comparison, in mm.

    Returns:
        the headers, one per slice.

    Raises:
        ValueError: a header cannot be read, the files do not form one regular volume, or their geometry is not
            ``affine``'s.
    """
    with warnings.catch_warnings():  # the reader already warned about this series' geometry
        warnings.simplefilter("ignore")
        _, headers, affine_lps = sorted_series_headers(files)
    if affine is not None:
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
        given = np.asarray(affine, float)
        if given.shape != (4, 4) or not np.allclose(given, ras, atol=atol):
            raise ValueError(
                f"{os.path.dirname(os.fspath(files[0]))}: the image's affine is not the series' stored geometry; the "
                "DICOM SEG needs the mask in the series' own voxel order (columns, rows, slices)."
            )
    return headers


def reference_headers(headers: Sequence[pydicom.Dataset]) -> tuple[list[pydicom.Dataset], list[str]]:
    """Copies of the source headers that highdicom accepts as references, and notes on what had to be filled in.

    De-identified exports sometimes blank UIDs in the data set. The SOP instance and class UIDs are then taken from
    the file meta (``MediaStorageSOPInstanceUID``/``MediaStorageSOPClassUID``, which the standard requires to be the
    same). A missing StudyInstanceUID or SeriesInstanceUID cannot be recovered: a UID derived from the instance UIDs
    (the same on every run) stands in, and a note says so, because a PACS cannot then file the SEG with its source.
    Empty ``SpecificCharacterSet`` values (meaning the default repertoire) are removed. The input is not changed.

    Args:
        headers: the source series' headers (pixel data not needed), in frame order.

    Returns:
        the prepared copies and the notes (empty when nothing was filled in).

    Raises:
        ValueError: an instance has no SOP Instance UID in the data set nor in the file meta.
    """
    out, notes = [], []
    filled: set[str] = set()
    for ds in headers:
        ds = copy.deepcopy(ds)
        meta = getattr(ds, "file_meta", None) or pydicom.Dataset()
        for key, meta_key in (
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
            ("SOPClassUID", "MediaStorageSOPClassUID"),
        ):
            if not str(ds.get(key, "") or ""):
                value = str(meta.get(meta_key, "") or "")
                if not value:
                    where = getattr(ds, "filename", None) or "a source instance"
                    raise ValueError(
                        f"{where}: no {key} in the data set or file meta; a DICOM SEG cannot reference it."
                    )
                setattr(ds, key, value)
                filled.add(key)
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
        out.append(ds)
    instance_uids = [str(ds.SOPInstanceUID) for ds in out]
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        if any(not str(ds.get(key, "") or "") for ds in out):
            uid = generate_uid(entropy_srcs=[_UID_SALT, key, *instance_uids])
            for ds in out:
                if not str(ds.get(key, "") or ""):
                    setattr(ds, key, uid)
            notes.append(
                f"the source has no {key}; the SEG uses the stand-in {uid}, so a PACS will not file it with its source"
            )
    if filled:
        notes.append(f"{' and '.join(sorted(filled))} taken from the file meta (empty in the data set)")
    return out, notes


def write_dicom_seg(
    mask: np.ndarray,
    source_headers: Sequence[pydicom.Dataset],
    path: str | os.PathLike,
    segment: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    series_description: str | None = None,
    series_number: int | None = None,
    algorithm: str = "pyconv-monai",
    version: str = "",
) -> list[str]:
    """Write a binary mask as a DICOM SEG (binary, one segment) referencing the single-frame source series.

    Args:
        mask: ``(frames, rows, columns)``, frame ``k`` on source instance ``source_headers[k]`` (nonzero: segment).
        source_headers: the source CT instances' headers, in frame order (pixel data not needed).
        path: the ``.dcm`` file.
        segment: label and codes of the segment, see :func:`segment_description`.
        overwrite: replace an existing file.
        series_description: of the SEG series (default ``"<label> segmentation"``).
        series_number: of the SEG series (default: the source's number + 1000, or 1000).
        algorithm: the algorithm's name, recorded in the SEG.
        version: the algorithm's version.

    Returns:
        notes on source UIDs that had to be filled in (see :func:`reference_headers`); empty for complete sources.

    Raises:
        ValueError: the mask does not have one frame of the source's size per source instance, or a source instance
            cannot be referenced.
        FileExistsError: the file exists and ``overwrite`` is False.
    """
    mask = np.asarray(mask) > 0
    n = len(source_headers)
    if n == 0:
        raise ValueError("no source instances to reference.")
    rows, cols = int(source_headers[0].Rows), int(source_headers[0].Columns)
    if mask.shape != (n, rows, cols):
        raise ValueError(f"mask shape {mask.shape} does not match the source: {n} frames of {rows}x{cols}.")
    sources, notes = reference_headers(source_headers)
    description = segment_description(segment, algorithm, version or __version__)
    number = series_number
    if number is None:
        try:
            number = int(source_headers[0].get("SeriesNumber")) + 1000
        except (TypeError, ValueError):
            number = 1000
    label = str(description.SegmentLabel)
    hd_logger = logging.getLogger("highdicom")
    level = hd_logger.level
    hd_logger.setLevel(max(level, logging.WARNING))  # highdicom logs every copied module at INFO
    try:
        seg = _segmentation(
            sources, mask, description, max(1, int(number)), (series_description or f"{label} segmentation"), algorithm
        )
    finally:
        hd_logger.setLevel(level)
    with atomic_write(path, overwrite=overwrite) as tmp:
        seg.save_as(tmp)
    for note in notes:
        logger.warning(f"{path}: {note}")
    return notes


def _segmentation(
    sources: Sequence[pydicom.Dataset],
    mask: np.ndarray,
    description: Any,
    series_number: int,
    series_description: str,
    algorithm: str,
) -> pydicom.Dataset:
    """The highdicom ``Segmentation`` object (binary, one segment, new series and instance UIDs)."""
    import highdicom as hd

    with warnings.catch_warnings():
        # names copied from the source (e.g. "JANCT000") are not ours to fix
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=mask,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="pyconv-monai",
            manufacturer_model_name=algorithm[:64],
            software_versions=__version__,
            device_serial_number="0",
            series_description=series_description[:64],
            content_description=f"{description.SegmentLabel} by {algorithm}"[:64],
            content_creator_name="pyconv-monai^",
        )
    return seg
