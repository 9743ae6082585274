#!/usr/bin/env python
# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Do the trained lung and liver bundles put their masks where those organs are in real CT series? One table.

    python benchmarks/organ_location.py                    # weights: bundles/<bundle>/models/model.pt
    python benchmarks/organ_location.py --ckpt liver_ct_segmentation=/path/to/model.pt

Each bundle's ``inference.json`` segments the real DICOM series of ``../shared/data`` (as ``pyconv-monai segment``
does), and its NIfTI mask is compared, in world coordinates, with a reference:

- liver: TotalSegmentator's liver (class 5) of ``ct_dicom_totalseg`` (20 slices; a model output, not manual truth)
  and the dcmqi liver label (class 1) of ``ct_dicom_dcmqi_3slice`` (3 slices);
- lung: no lung label exists there, so the reference is a proxy: per axial slice, regions below -400 HU that do
  not touch the image border (air inside the body: the lung bases, and bowel gas where there is any) and cover at
  least 500 mm^2. The lungs lie inside it, so *precision* (predicted voxels inside the reference) is the check;
  recall and Dice also count bowel gas.

The weights are the shipped ones (``bundles/<bundle>/models/model.pt``) unless ``--ckpt`` names others; a bundle
without weights is skipped with the reason. Exit status 1 when a series fails its criterion. The table of the
shipped weights is in ``docs/inference.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pyconv_monai.cli import segment
from pyconv_monai.data.geometry import geometry_mismatch
from pyconv_monai.transforms import LoadVolume

from benchmarks.common import REPO, dice, markdown_table, shared_data

# what "lies where the organ is" means here, per reference (see the module docstring)
CRITERIA: dict[str, dict[str, float]] = {
    "liver": {"dice": 0.5, "precision": 0.7},
    "enclosed air (lung proxy)": {"precision": 0.7},
}
SERIES = {
    "liver_ct_segmentation": [
        ("ct_dicom_totalseg/dicom", "liver", ("ct_dicom_totalseg/labels/example_seg_dicom.nii.gz", 5)),
        ("ct_dicom_dcmqi_3slice/dicom", "liver", ("ct_dicom_dcmqi_3slice/seg/liver_spine_seg.nii.gz", 1)),
    ],
    "lung_ct_segmentation": [
        ("ct_dicom_totalseg/dicom", "enclosed air (lung proxy)", None),
        ("ct_dicom_dcmqi_3slice/dicom", "enclosed air (lung proxy)", None),
    ],
}


def enclosed_air(hu: np.ndarray, affine: np.ndarray, threshold: float = -400.0, min_area_mm2: float = 500.0):
    """Per axial slice (last axis of a RAS volume): regions below ``threshold`` HU not touching the slice border."""
    pixel_mm2 = float(np.linalg.norm(affine[:3, 0]) * np.linalg.norm(affine[:3, 1]))
    out = np.zeros(hu.shape, bool)
    for k in range(hu.shape[-1]):
        labels, n = ndimage.label(hu[..., k] < threshold)
        if n == 0:
            continue
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        areas = ndimage.sum(np.ones_like(labels), labels, index=np.arange(1, n + 1)) * pixel_mm2
        keep = [i + 1 for i, a in enumerate(areas) if a >= min_area_mm2 and i + 1 not in border]
        out[..., k] = np.isin(labels, keep)
    return out


def scores(pred: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Dice, precision (share of predicted voxels in ``ref``), recall, and both volumes in mL."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    both = float(np.logical_and(pred, ref).sum())
    p, r = float(pred.sum()), float(ref.sum())
    return {
        "dice": dice(pred, ref),
        "precision": both / p if p else float("nan"),
        "recall": both / r if r else float("nan"),
        "pred_ml": p * voxel_ml,
        "ref_ml": r * voxel_ml,
    }


def check(bundle: str, ckpt_file: str | os.PathLike, data: Path, workdir: str | os.PathLike) -> list[dict]:
    """Segment the bundle's series with ``ckpt_file`` and score each mask against its reference.

    Returns:
        one dict per series: ``series``, ``reference``, the :func:`scores`, and ``passed`` (against :data:`CRITERIA`).
    """
    load = LoadVolume(axcodes="RAS")
    rows = []
    for i, (series, reference, label) in enumerate(SERIES[bundle]):
        out = Path(workdir) / f"{bundle}_{i}"
        overrides = {"ckpt_file": str(ckpt_file), "progress": False, "dicom_seg": False}
        segment(data / series, out, bundle, overrides, configure_logging=False)
        with open(out / "volumes.csv", newline="") as f:  # what the run wrote, one row per case
            cases = [row for row in csv.DictReader(f)]
        if len(cases) != 1 or cases[0].get("status") != "ok":
            raise RuntimeError(f"{out / 'volumes.csv'}: expected one segmented case for {series}, got {cases}")
        mask = load(str(out / f"{cases[0]['case']}_seg.nii.gz"))
        ct = load(str(data / series))
        if label is None:
            ref = enclosed_air(ct[0].numpy(), np.asarray(ct.affine))
        else:
            ref_img = load(str(data / label[0]))
            problem = geometry_mismatch(ref_img, mask)
            if problem:
                raise ValueError(f"{label[0]} is not on the grid of the mask: {problem}")
            ref = ref_img[0].numpy() == label[1]
        voxel_ml = abs(float(np.linalg.det(np.asarray(mask.affine)[:3, :3]))) / 1000.0
        row = {"series": series, "reference": reference, **scores(mask[0].numpy() > 0, ref, voxel_ml)}
        row["passed"] = all(row[k] >= v for k, v in CRITERIA[reference].items())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", default=[], help="BUNDLE=PATH weights (default: the bundle's)")
    parser.add_argument("--bundles", nargs="+", default=list(SERIES), choices=list(SERIES))
    args = parser.parse_args(argv)
    given = dict(item.split("=", 1) for item in args.ckpt)
    data = shared_data()
    rows = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in args.bundles:
            ckpt = Path(given.get(bundle, REPO / "bundles" / bundle / "models" / "model.pt"))
            if not ckpt.is_file():
                rows.append((bundle, "–", "–", "", "", "", "", "", f"skipped: no weights at {ckpt}"))
                continue
            for r in check(bundle, ckpt, data, tmp):
                failed |= not r["passed"]
                rows.append((bundle, r["series"], r["reference"], f"{r['dice']:.3f}", f"{r['precision']:.3f}",
                             f"{r['recall']:.3f}", f"{r['pred_ml']:.1f}", f"{r['ref_ml']:.1f}",
                             "yes" if r["passed"] else "NO"))  # fmt: skip
    header = ("bundle", "series", "reference", "Dice", "precision", "recall", "predicted mL", "reference mL", "passed")
    print("\n".join(markdown_table(header, "lllrrrrrl", rows)))
    print(
        "\ncriteria: "
        + "; ".join(f"{k}: " + ", ".join(f"{m} >= {v}" for m, v in c.items()) for k, c in CRITERIA.items())
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
