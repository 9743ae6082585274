"""A MONAI Deploy App SDK application that segments the liver in a CT DICOM series with the exported
``liver_ct_segmentation`` bundle, unchanged, and writes a DICOM SEG.

Only the SDK's standard operators run: DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator ->
DICOMSeriesToVolumeOperator -> MonaiBundleInferenceOperator (the bundle's own ``preprocessing``, ``inferer`` and
``postprocessing`` from ``inference.json`` inside ``models/model.ts``) -> DICOMSegmentationWriterOperator.

The one thing the app adds: the SDK's loader (DICOMDataLoaderOperator, SDK 4.0) drops every instance whose
StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID or SOPClassUID is empty, or whose SeriesNumber is present but
empty (it calls ``int(None)``); the embedded series ``data/ct_dicom_totalseg/dicom`` has all five empty (legal for
the type 2 SeriesNumber, not for the UIDs). Then it finds no series and the app stops with "Missing expected input
'study_selected_series_list'". For such input the app loads a temporary copy of the series in which the empty UIDs
are filled with UIDs derived from the files (the same input gives the same UIDs) and an empty SeriesNumber is
left out; the input files are never changed. The SEG then references the filled UIDs.

Run (in the venv where ``monai-deploy-app-sdk`` and ``pyconv-monai`` are installed)::

    python deploy/liver_seg_app -i data/ct_dicom_totalseg/dicom -o runs/deploy_liver \
        -m <bundle>/models/model.ts
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import pydicom
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.core.domain import Image
from monai.deploy.core.io_type import IOType
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

__all__ = ["LiverSegApp", "CT_RULES", "missing_uids", "copy_with_uids", "bundle_metadata"]

# DICOMSeriesSelectorOperator rules: every CT series of the study.
CT_RULES = json.dumps({"selections": [{"name": "CT Series", "conditions": {"Modality": "(?i)CT"}}]})

_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_SALT = "pyconv-monai deploy liver_seg_app"


def missing_uids(folder: Path) -> list[str]:
    """The files of ``folder`` (recursively) that the SDK's loader drops: a Study/Series/SOP Instance UID or the
    SOP Class UID empty, or SeriesNumber present and empty.

    Args:
        folder: a folder of DICOM files.

    Returns:
        the relative paths of those files, sorted.
    """
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        empty_number = "SeriesNumber" in ds and ds["SeriesNumber"].value in (None, "")
        if empty_number or any(not str(ds.get(tag, "") or "").strip() for tag in _UID_TAGS):
            out.append(str(path.relative_to(folder)))
    return out


def copy_with_uids(src: Path, dst: Path) -> Path:
    """Copy the DICOM files of ``src`` into ``dst`` with their empty UIDs filled; nothing in ``src`` changes.

    Files that share a (empty or set) StudyInstanceUID/SeriesInstanceUID keep sharing one filled UID; a filled
    SOPInstanceUID is derived from the file's relative path and its series; an empty SOPClassUID of a CT image
    becomes CT Image Storage; an empty SeriesNumber is left out.

    Args:
        src: folder of the input series (read only).
        dst: the folder to write (created; must not exist).

    Returns:
        ``dst``.

    Raises:
        ValueError: a file with an empty SOPClassUID is not a CT image (its class cannot be told).
    """
    dst.mkdir(parents=True)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = str(path.relative_to(src))
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            continue
        frame = str(ds.get("FrameOfReferenceUID", "") or "")
        study = str(ds.get("StudyInstanceUID", "") or "") or generate_uid(entropy_srcs=[_SALT, "study", frame])
        series = str(ds.get("SeriesInstanceUID", "") or "") or generate_uid(
            entropy_srcs=[_SALT, "series", study, frame, str(ds.get("SeriesNumber", "")), str(ds.get("Modality"))]
        )
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        if "SeriesNumber" in ds and ds["SeriesNumber"].value in (None, ""):
            del ds.SeriesNumber
        if not str(ds.get("SOPInstanceUID", "") or ""):
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[_SALT, "instance", series, rel])
        if not str(ds.get("SOPClassUID", "") or ""):
            if str(ds.get("Modality", "")).upper() != "CT":
                raise ValueError(f"{path}: SOPClassUID is empty and Modality is {ds.get('Modality')!r}, not CT")
            ds.SOPClassUID = _CT_IMAGE_STORAGE
        if hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
    return dst


def bundle_metadata(model_file: Path) -> dict:
    """The bundle's ``metadata.json`` that ``ckpt_export`` stored in the TorchScript archive (``extra/``).

    Args:
        model_file: the bundle's ``models/model.ts``.

    Returns:
        the metadata, ``{}`` when the archive has none.
    """
    with zipfile.ZipFile(model_file) as archive:
        names = [n for n in archive.namelist() if n.endswith("extra/metadata.json")]
        return json.loads(archive.read(names[0])) if names else {}


class LiverSegApp(Application):
    """DICOM CT series in, DICOM SEG of the liver out, with the ``liver_ct_segmentation`` bundle unchanged."""

    def __init__(self, *args, **kwargs) -> None:
        self._scratch: tempfile.TemporaryDirectory | None = None
        super().__init__(*args, **kwargs)

    def run(self, *args, **kwargs) -> None:
        try:
            super().run(*args, **kwargs)
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()

    def _loadable_input(self, input_path: Path) -> Path:
        """``input_path``, or a temporary copy with filled UIDs where the SDK's loader would drop its files."""
        if not input_path.is_dir():
            raise FileNotFoundError(f"{input_path}: no such folder of DICOM files")
        empty = missing_uids(input_path)
        if not empty:
            return input_path
        logging.warning(
            f"{input_path}: {len(empty)} file(s) with an empty Study/Series/SOP Instance UID, SOP Class UID or "
            f"SeriesNumber (e.g. {empty[0]}); the SDK's DICOM loader would drop them, so a temporary copy with "
            "filled UIDs is loaded"
        )
        self._scratch = tempfile.TemporaryDirectory(prefix="liver_seg_app_")
        return copy_with_uids(input_path, Path(self._scratch.name) / "dicom")

    def compose(self) -> None:
        app_context: AppContext = Application.init_app_context(self.argv)
        input_path = self._loadable_input(Path(app_context.input_path))
        output_path = Path(app_context.output_path)
        model_path = Path(app_context.model_path)
        model_file = model_path if model_path.is_file() else model_path / "model.ts"
        version = bundle_metadata(model_file).get("version", "") if model_file.is_file() else ""

        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_path, name="loader")
        selector = DICOMSeriesSelectorOperator(self, rules=CT_RULES, name="selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="to_volume")
        infer = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            name="liver_ct_segmentation",
        )
        segments = [
            SegmentDescription(
                segment_label="Liver",
                segmented_property_category=codes.SCT.Organ,
                segmented_property_type=codes.SCT.Liver,
                algorithm_name="pyconv-monai liver_ct_segmentation",
                algorithm_family=codes.DCM.ArtificialIntelligence,
                algorithm_version=version or "unknown",
            )
        ]
        writer = DICOMSegmentationWriterOperator(
            self,
            segment_descriptions=segments,
            custom_tags={"SeriesDescription": "pyconv-monai liver segmentation, not for clinical use"},
            output_folder=output_path,
            name="seg_writer",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, infer, {("image", "image")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(infer, writer, {("pred", "seg_image")})


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"))
    LiverSegApp().run()
