# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Outputs of inference: binary masks (NIfTI, TIFF, PNG), DICOM SEG, the volume CSV; safe names, atomic writes."""

from .dicom_seg import DEFAULT_SEGMENT, reference_headers, segment_description, write_dicom_seg
from .masks import MASK_SUFFIXES, mask_suffix, write_nifti_mask, write_png_mask, write_tiff_mask
from .paths import TEMP_PREFIX, UniqueNames, atomic_write, output_path, remove_stale_temps, safe_name, short_hash
from .table import VOLUME_COLUMNS, write_csv

__all__ = [
    "DEFAULT_SEGMENT",
    "MASK_SUFFIXES",
    "TEMP_PREFIX",
    "UniqueNames",
    "VOLUME_COLUMNS",
    "atomic_write",
    "mask_suffix",
    "output_path",
    "reference_headers",
    "remove_stale_temps",
    "safe_name",
    "segment_description",
    "short_hash",
    "write_csv",
    "write_dicom_seg",
    "write_nifti_mask",
    "write_png_mask",
    "write_tiff_mask",
]
