# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Datalists and splits of the training sets, DICOM series discovery, the cases of an inference run, readers MONAI
lacks, slice geometry."""

from .cache import SafeCacheDataset
from .cases import DEFAULT_EXCLUDE, find_cases
from .datalist import LAYOUTS, detect_layout, load_datalist, safe_case_id
from .dataset import CaseDataset
from .dicom import (
    DicomSegReader,
    DicomSeries,
    DicomSeriesReader,
    find_dicom_series,
    is_dicom_file,
    is_dicom_seg,
    series_geometry,
    sorted_series_headers,
)
from .formats import SUPPORTED_FORMATS, file_stem, get_reader, image_kind, num_slices, slice_axis
from .geometry import geometry_mismatch, take_slice
from .headers import MAX_VOXELS, AssumedGeometry, check_nifti_header, check_nrrd_header, parse_spacing
from .meta import tracking_meta
from .split import split_datalist
from .tiff import TiffReader, tiff_num_pages

__all__ = [
    "AssumedGeometry",
    "CaseDataset",
    "DEFAULT_EXCLUDE",
    "DicomSegReader",
    "DicomSeries",
    "DicomSeriesReader",
    "LAYOUTS",
    "MAX_VOXELS",
    "SUPPORTED_FORMATS",
    "SafeCacheDataset",
    "TiffReader",
    "check_nifti_header",
    "check_nrrd_header",
    "detect_layout",
    "file_stem",
    "find_cases",
    "find_dicom_series",
    "geometry_mismatch",
    "get_reader",
    "image_kind",
    "is_dicom_file",
    "is_dicom_seg",
    "load_datalist",
    "num_slices",
    "parse_spacing",
    "safe_case_id",
    "series_geometry",
    "sorted_series_headers",
    "slice_axis",
    "split_datalist",
    "take_slice",
    "tiff_num_pages",
    "tracking_meta",
]
