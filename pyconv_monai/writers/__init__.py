# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Outputs of inference: binary masks (NIfTI, TIFF, PNG), DICOM SEG, the volume CSV.

Each is written atomically and never over a user's file (:mod:`pyconv_monai.utils.files`).
"""

from .dicom_seg import DEFAULT_SEGMENT, reference_headers, segment_description, series_headers, write_dicom_seg
from .masks import MASK_SUFFIXES, mask_suffix, write_nifti_mask, write_png_mask, write_tiff_mask
from .save import SaveImageDicomSegd, SaveImageMaskd, case_outputs, mask_affine
from .table import FORMULA_STARTS, VOLUME_COLUMNS, escape_cell, write_csv

__all__ = [
    "DEFAULT_SEGMENT",
    "FORMULA_STARTS",
    "MASK_SUFFIXES",
    "SaveImageDicomSegd",
    "SaveImageMaskd",
    "VOLUME_COLUMNS",
    "case_outputs",
    "mask_affine",
    "escape_cell",
    "mask_suffix",
    "reference_headers",
    "segment_description",
    "series_headers",
    "write_csv",
    "write_dicom_seg",
    "write_nifti_mask",
    "write_png_mask",
    "write_tiff_mask",
]
