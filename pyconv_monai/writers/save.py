# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The last steps of the bundles' inference ``postprocessing``: each mask written in the format of its input, and a
DICOM SEG for each DICOM series.

:class:`SaveImageMaskd` is MONAI's ``SaveImaged`` for binary masks on the input's voxel grid, with this project's
writers under it: NIfTI with the input's own affine for volumes (DICOM, NIfTI, NRRD), a TIFF stack for TIFF, PNG for
2D images; atomic, and never over an existing file unless ``overwrite``. It is a ``SaveImaged`` (and named so), so
the clients that run a bundle's ``postprocessing`` in memory leave it out as they leave out MONAI's: MONAI Label
drops ``SaveImaged`` instances, MONAI Deploy's bundle operator drops transforms named ``SaveImage...``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import SaveImaged
from pyconv_monai.data.formats import GEOMETRY_KINDS
from pyconv_monai.utils import as_bool, output_path

from .dicom_seg import series_headers, write_dicom_seg
from .masks import mask_suffix, write_nifti_mask, write_png_mask, write_tiff_mask

__all__ = ["SaveImageDicomSegd", "SaveImageMaskd", "case_outputs", "mask_affine"]


def case_outputs(name: str, kind: str, dicom_seg: bool = True) -> list[str]:
    """The file names :class:`SaveImageMaskd` and :class:`SaveImageDicomSegd` write for a case: ``<name>_seg`` with
    the mask suffix of ``kind``, and ``<name>_seg.dcm`` for a DICOM series when ``dicom_seg``."""
    names = [f"{name}_seg{mask_suffix(kind)}"]
    if dicom_seg and kind == "dicom_series":
        names.append(f"{name}_seg.dcm")
    return names


def mask_affine(mask: MetaTensor, source: str = "") -> np.ndarray:
    """The affine to write a mask with: the input's own (meta ``original_affine``, as loaded), once the mask's
    affine (after ``Invertd``) is checked to be that grid; the mask's own affine where the meta has none.

    Raises:
        ValueError: the mask does not lie on the input's grid (a spatial step of the preprocessing not inverted).
    """
    affine = np.asarray(mask.affine, float)
    original = mask.meta.get("original_affine")
    if original is None:
        return affine
    original = np.asarray(original, float)
    if original.shape != (4, 4) or not np.allclose(affine, original, atol=1e-4):
        raise ValueError(
            f"{source}: the prediction is not on the input's voxel grid; the inference config's postprocessing must "
            "invert every spatial step of its preprocessing (Invertd)"
        )
    return original


class SaveImageMaskd(SaveImaged):
    """Write each binary mask ``(1, X, Y, Z)`` (on its input's voxel grid, e.g. after ``Invertd``) as
    ``<case>_seg<suffix>`` in ``output_dir``, in the format of its input (see
    :func:`pyconv_monai.writers.mask_suffix`), and record the path in the mask's meta ``saved_to``.

    Args:
        keys: the mask key(s), e.g. ``"pred"``.
        output_dir: the output folder (created when the first mask is written).
        overwrite: replace existing masks; otherwise an existing file fails the case (``FileExistsError``).
        name_key: item key of the case name (:func:`pyconv_monai.data.find_cases` makes it safe and unique).
        kind_key: item key of the input kind (``"dicom_series"``, ``"nifti"``, ``"tiff"``, ...); the mask's meta
            ``kind`` where the item has none.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        FileExistsError: (on call) the mask exists and ``overwrite`` is False.
        ValueError: (on call) the mask is not on the input's grid, or a name that is not a single file name.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        overwrite: bool | str = False,
        name_key: str = "case",
        kind_key: str = "kind",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, output_dir=output_dir, allow_missing_keys=allow_missing_keys, print_log=False)
        self.output_dir = os.fspath(output_dir)
        self.overwrite = as_bool(overwrite)
        self.name_key = name_key
        self.kind_key = kind_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            meta = mask.meta if isinstance(mask, MetaTensor) else {}
            kind = str(d.get(self.kind_key) or meta.get("kind") or "nifti")
            source = str(meta.get("filename_or_obj", "") or d.get(self.name_key, ""))
            path = output_path(self.output_dir, case_outputs(str(d[self.name_key]), kind, dicom_seg=False)[0])
            if os.path.lexists(path) and not self.overwrite:
                raise FileExistsError(
                    f"{path} exists; pass --overwrite true (pyconv-monai segment: --overwrite) to replace it"
                )
            array = torch.as_tensor(mask).detach().cpu().numpy()[0] > 0.5
            os.makedirs(self.output_dir, exist_ok=True)
            if kind in GEOMETRY_KINDS:
                affine = mask_affine(mask, source) if isinstance(mask, MetaTensor) else np.eye(4)
                write_nifti_mask(array, affine, path, overwrite=self.overwrite)
            elif kind == "tiff":
                write_tiff_mask(array if array.shape[-1] > 1 else array[..., 0], path, overwrite=self.overwrite)
            else:
                write_png_mask(array[..., 0], path, overwrite=self.overwrite)
            if isinstance(mask, MetaTensor):
                mask.meta["saved_to"] = path
        return d


class SaveImageDicomSegd(SaveImaged):
    """Write each mask of a DICOM series as a DICOM SEG ``<case>_seg.dcm`` in ``output_dir`` that references its
    source instances (:func:`pyconv_monai.writers.write_dicom_seg`), after :class:`SaveImageMaskd` wrote the mask;
    other inputs pass, and so do series whose voxel size was assumed (meta ``assumed_spacing``: their headers carry no
    usable geometry to place SEG frames by; a note says so). The path goes to the mask's meta ``dicom_seg``, notes on
    stand-in UIDs to ``dicom_seg_notes``.

    Like :class:`SaveImageMaskd` a ``SaveImaged``, so clients that save in memory leave it out.

    Args:
        keys: the mask key(s) ``(1, X, Y, Z)``, on the series' voxel grid in its stored order.
        output_dir: the output folder.
        segment: label and codes of the segment (see :func:`pyconv_monai.writers.segment_description`).
        enabled: write SEGs (``False``: pass everything).
        overwrite: replace an existing SEG; otherwise it fails the case.
        algorithm: the algorithm's name recorded in the SEG.
        name_key: item key of the case name.
        kind_key: item key of the input kind (only ``"dicom_series"`` gets a SEG).
        files_key: item key of the series' files (the SEG's source instances).
        allow_missing_keys: don't raise for missing keys.

    Raises:
        FileExistsError: (on call) the SEG exists and ``overwrite`` is False.
        ValueError: (on call) the SEG could not be written (the message says the mask was).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        segment: Mapping[str, Any] | None = None,
        enabled: bool | str = True,
        overwrite: bool | str = False,
        algorithm: str = "pyconv-monai",
        name_key: str = "case",
        kind_key: str = "kind",
        files_key: str = "files",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, output_dir=output_dir, allow_missing_keys=allow_missing_keys, print_log=False)
        self.output_dir = os.fspath(output_dir)
        self.segment = dict(segment or {})
        self.enabled = as_bool(enabled)
        self.overwrite = as_bool(overwrite)
        self.algorithm = algorithm
        self.name_key, self.kind_key, self.files_key = name_key, kind_key, files_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.enabled or d.get(self.kind_key) != "dicom_series" or not d.get(self.files_key):
            return d
        for key in self.key_iterator(d):
            mask = d[key]
            if isinstance(mask, MetaTensor) and mask.meta.get("assumed_spacing") is not None:
                # the series' own headers carry no usable geometry: a SEG would place its frames by them
                mask.meta["dicom_seg_notes"] = ["no DICOM SEG written: the voxel size was assumed, not the series'"]
                continue
            path = output_path(self.output_dir, case_outputs(str(d[self.name_key]), "dicom_series")[1])
            if os.path.lexists(path) and not self.overwrite:
                raise FileExistsError(
                    f"{path} exists; pass --overwrite true (pyconv-monai segment: --overwrite) to replace it"
                )
            written = os.path.basename(str(mask.meta.get("saved_to", ""))) if isinstance(mask, MetaTensor) else ""
            try:
                affine = mask_affine(mask) if isinstance(mask, MetaTensor) else np.eye(4)
                headers = series_headers(d[self.files_key], affine)  # in the volume's slice order
                os.makedirs(self.output_dir, exist_ok=True)
                frames = (torch.as_tensor(mask).detach().cpu().numpy()[0] > 0.5).transpose(2, 1, 0)
                notes = write_dicom_seg(
                    frames, headers, path, self.segment, overwrite=self.overwrite, algorithm=self.algorithm
                )
            except Exception as e:
                raise ValueError(f"the mask {written or 'file'} was written, the DICOM SEG was not: {e}") from e
            if isinstance(mask, MetaTensor):
                mask.meta["dicom_seg"] = path
                mask.meta["dicom_seg_notes"] = list(notes)
        return d
