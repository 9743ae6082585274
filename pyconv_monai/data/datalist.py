# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Datalists for the training sets' folder layouts: one dict per 2D training slice.

Every item has ``"image"`` and ``"label"`` (absolute paths) and ``"case"`` (a unique, filesystem-safe id). Items
from stacks and volumes also have ``"slice"`` (the index :class:`pyconv_monai.transforms.LoadSlice2Dd` loads) and
``"volume"`` (the id of the stack or volume, to split by with ``split_datalist(..., group_key="volume")``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

from monai.data import load_decathlon_datalist

from .formats import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES, NRRD_SUFFIXES, file_stem, image_kind, num_slices
from .tiff import TIFF_SUFFIXES, tiff_num_pages

__all__ = ["LAYOUTS", "detect_layout", "load_datalist", "safe_case_id"]

# What each layout's folder must hold (used for detection and in error messages).
LAYOUTS: dict[str, str] = {
    "isbi2012_em": "train-volume.tif and train-labels.tif (multi-page TIFF stacks, page i labels page i)",
    "lung_ct_2d": "2d_images/ and 2d_masks/ holding 2D TIFFs with the same file names",
    "liver_ct_2d": "train/ (and optionally val/) holding NNN.png images and NNN_mask.png masks",
    "folders": "images/ and labels/ holding files (or DICOM series folders) matched by file stem",
    "decathlon": "dataset.json with a 'training' list of {'image': ..., 'label': ...} (Medical Segmentation Decathlon)",
}
_LABEL_SUFFIXES = ("", "_mask", "_label", "_labels", "_seg", "_gt")
_VOLUME_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES + TIFF_SUFFIXES + IMAGE_2D_SUFFIXES + (".dcm",)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_case_id(text: str) -> str:
    """``text`` with every run of characters other than letters, digits, ``.``, ``_``, ``-`` replaced by ``_``."""
    return _UNSAFE.sub("_", text).strip("._") or "case"


def _require_dir(path: str, layout: str) -> None:
    if not os.path.isdir(path):
        raise ValueError(f"{path}: folder not found; layout {layout!r} expects {LAYOUTS[layout]}.")


def _listdir(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if not f.startswith("."))


def _slices(image: str, label: str, case: str, count: Callable[[str], int]) -> list[dict]:
    """One item per slice of an image/label pair (one item without ``slice`` for 2D files)."""
    n, n_label = count(image), count(label)
    if n != n_label:
        raise ValueError(f"{label} holds {n_label} slice(s) but its image {image} holds {n}.")
    base = {"image": image, "label": label}
    if n == 1 and image_kind(image) in ("image2d", "tiff"):
        return [{**base, "case": case}]
    width = max(3, len(str(n - 1)))
    return [{**base, "case": f"{case}_s{k:0{width}d}", "slice": k, "volume": case} for k in range(n)]


def _isbi2012_em(root: str, axcodes: str) -> list[dict]:
    image, label = os.path.join(root, "train-volume.tif"), os.path.join(root, "train-labels.tif")
    for path in (image, label):
        if not os.path.isfile(path):
            raise ValueError(f"{path} not found; layout 'isbi2012_em' expects {LAYOUTS['isbi2012_em']}.")
    return _slices(image, label, "train-volume", tiff_num_pages)


def _lung_ct_2d(root: str, axcodes: str) -> list[dict]:
    images, masks = os.path.join(root, "2d_images"), os.path.join(root, "2d_masks")
    _require_dir(images, "lung_ct_2d")
    _require_dir(masks, "lung_ct_2d")
    return _pair_by_stem(images, masks, "lung_ct_2d", count=num_slices, suffixes=("",))


def _liver_ct_2d(root: str, axcodes: str) -> list[dict]:
    subsets = [s for s in ("train", "val") if os.path.isdir(os.path.join(root, s))]
    if "train" not in subsets:
        _require_dir(os.path.join(root, "train"), "liver_ct_2d")
    items = []
    for subset in subsets:
        folder = os.path.join(root, subset)
        names = _listdir(folder)
        masks = {n[: -len("_mask.png")] for n in names if n.endswith("_mask.png")}
        images = {n[: -len(".png")] for n in names if n.endswith(".png") and not n.endswith("_mask.png")}
        if not images and not masks:
            raise ValueError(f"{folder}: no NNN.png images; layout 'liver_ct_2d' expects {LAYOUTS['liver_ct_2d']}.")
        unpaired = sorted(images - masks)
        if unpaired:
            stem = unpaired[0]
            raise ValueError(f"{os.path.join(folder, stem)}.png: image without mask (expected {stem}_mask.png).")
        unpaired = sorted(masks - images)
        if unpaired:
            stem = unpaired[0]
            raise ValueError(f"{os.path.join(folder, stem)}_mask.png: mask without image (expected {stem}.png).")
        for stem in sorted(images):
            items.append(
                {
                    "image": os.path.join(folder, f"{stem}.png"),
                    "label": os.path.join(folder, f"{stem}_mask.png"),
                    "case": safe_case_id(f"{subset}_{stem}"),
                    "subset": subset,
                }
            )
    return items


def _is_candidate(folder: str, name: str) -> bool:
    path = os.path.join(folder, name)
    return os.path.isdir(path) or name.lower().endswith(_VOLUME_SUFFIXES) or "." not in name


def _pair_by_stem(
    images: str, labels: str, layout: str, count: Callable[[str], int], suffixes: tuple[str, ...] = _LABEL_SUFFIXES
) -> list[dict]:
    """Pair ``images/<stem>.*`` with ``labels/<stem><suffix>.*``; every file must have its partner."""
    image_files = [n for n in _listdir(images) if _is_candidate(images, n)]
    label_files = [n for n in _listdir(labels) if _is_candidate(labels, n)]
    if not image_files:
        raise ValueError(f"{images}: no image files; layout {layout!r} expects {LAYOUTS[layout]}.")
    if not label_files:
        raise ValueError(f"{labels}: no label files; layout {layout!r} expects {LAYOUTS[layout]}.")
    by_stem: dict[str, str] = {}
    for n in label_files:
        stem = file_stem(n)
        if stem in by_stem:
            raise ValueError(f"{os.path.join(labels, n)}: two labels share the stem {stem!r} ({by_stem[stem]}).")
        by_stem[stem] = n
    used: set[str] = set()
    items = []
    for n in image_files:
        stem = file_stem(n)
        match = next((stem + s for s in suffixes if stem + s in by_stem and stem + s not in used), None)
        if match is None:
            names = " or ".join(f"{stem}{s}.*" for s in suffixes)
            raise ValueError(f"{os.path.join(images, n)}: image without label (expected {names} in {labels}).")
        used.add(match)
        items.append((os.path.join(images, n), os.path.join(labels, by_stem[match]), stem))
    unpaired = sorted(set(by_stem) - used)
    if unpaired:
        raise ValueError(f"{os.path.join(labels, by_stem[unpaired[0]])}: label without image in {images}.")
    return _expand(items, count)


def _expand(pairs: list[tuple[str, str, str]], count: Callable[[str], int]) -> list[dict]:
    items: list[dict] = []
    for image, label, case in pairs:
        items.extend(_slices(image, label, safe_case_id(case), count))
    return _unique_cases(items)


def _unique_cases(items: list[dict]) -> list[dict]:
    """Make case ids unique (``a.nii.gz`` and ``a.nrrd`` both give ``a``) by appending ``-1``, ``-2``, ..."""
    seen: set[str] = set()
    for item in items:
        case, n = item["case"], 0
        while item["case"] in seen:
            n += 1
            item["case"] = f"{case}-{n}"
        seen.add(item["case"])
    return items


def _folders(root: str, axcodes: str) -> list[dict]:
    for images, labels in (("images", "labels"), ("imagesTr", "labelsTr")):
        if os.path.isdir(os.path.join(root, images)) and os.path.isdir(os.path.join(root, labels)):
            return _pair_by_stem(
                os.path.join(root, images),
                os.path.join(root, labels),
                "folders",
                count=lambda p: num_slices(p, axcodes=axcodes),
            )
    raise ValueError(f"{root}: no images/ and labels/ folders; layout 'folders' expects {LAYOUTS['folders']}.")


def _decathlon(root: str, axcodes: str) -> list[dict]:
    path = os.path.join(root, "dataset.json")
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found; layout 'decathlon' expects {LAYOUTS['decathlon']}.")
    try:
        pairs = load_decathlon_datalist(path, is_segmentation=True, data_list_key="training", base_dir=root)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a usable Decathlon dataset.json ({type(e).__name__}: {e}).") from e
    if not pairs:
        raise ValueError(f"{path}: the 'training' list is empty.")
    items = []
    for entry in pairs:
        image, label = entry.get("image"), entry.get("label")
        if not isinstance(image, str) or not isinstance(label, str):
            raise ValueError(f"{path}: each training entry needs one 'image' and one 'label' path, got {entry}.")
        for p in (image, label):
            if not os.path.exists(p):
                raise ValueError(f"{p}: listed in {path} but not found.")
        items.append((os.path.abspath(image), os.path.abspath(label), file_stem(image)))
    return _expand(items, lambda p: num_slices(p, axcodes=axcodes))


_BUILDERS: dict[str, Callable[[str, str], list[dict]]] = {
    "isbi2012_em": _isbi2012_em,
    "lung_ct_2d": _lung_ct_2d,
    "liver_ct_2d": _liver_ct_2d,
    "folders": _folders,
    "decathlon": _decathlon,
}


def detect_layout(dataset_dir: str | os.PathLike) -> str:
    """The layout of ``dataset_dir`` (a key of :data:`LAYOUTS`), from the files and folders it holds.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no layout matches; the message lists what each layout expects.
    """
    root = os.path.abspath(os.fspath(dataset_dir))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset folder not found: {root}")
    names = set(os.listdir(root))
    if "dataset.json" in names:
        return "decathlon"
    if {"train-volume.tif", "train-labels.tif"} <= names:
        return "isbi2012_em"
    if {"2d_images", "2d_masks"} <= names:
        return "lung_ct_2d"
    if "train" in names and any(n.endswith("_mask.png") for n in os.listdir(os.path.join(root, "train"))):
        return "liver_ct_2d"
    if {"images", "labels"} <= names or {"imagesTr", "labelsTr"} <= names:
        return "folders"
    expected = "\n  ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
    found = ", ".join(sorted(names)[:10]) or "nothing"
    raise ValueError(f"{root}: no known dataset layout (found {found}). Expected one of:\n  {expected}")


def load_datalist(dataset_dir: str | os.PathLike, layout: str = "auto", axcodes: str = "PLS") -> list[dict]:
    """Build the datalist of a training set: one dict per 2D image/label slice.

    Args:
        dataset_dir: the data set's folder.
        layout: one of :data:`LAYOUTS` (``"isbi2012_em"``, ``"lung_ct_2d"``, ``"liver_ct_2d"``, ``"folders"``,
            ``"decathlon"``) or ``"auto"`` to detect it.
        axcodes: orientation volumes are sliced in (must match ``LoadSlice2Dd(axcodes=...)``): the slice count is
            taken along its last axis.

    Returns:
        items with ``"image"``, ``"label"`` (absolute paths), ``"case"`` (unique, filesystem-safe); stack and
        volume items add ``"slice"`` (int) and ``"volume"``; liver_ct_2d items add ``"subset"`` (``"train"`` or
        ``"val"``, the folder they came from). Sorted as the folders list them.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: unknown or undetected layout, empty or unmatched folders (naming the folder and what was
            expected), an image without label or a label without image (naming the file), or an image and label
            with different slice counts.
    """
    root = os.path.abspath(os.fspath(dataset_dir))
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in _BUILDERS:
        raise ValueError(f"unknown layout {layout!r}; choose 'auto' or one of {sorted(_BUILDERS)}.")
    elif not os.path.isdir(root):
        raise FileNotFoundError(f"dataset folder not found: {root}")
    items = _BUILDERS[layout](root, axcodes)
    if not items:
        raise ValueError(f"{root}: no image/label pairs found for layout {layout!r} ({LAYOUTS[layout]}).")
    return items
