# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Load any supported image as a volume or as one 2D ``(1, H, W)`` slice, with the checks users need.

Formats: DICOM series folders and files, DICOM SEG, NIfTI, NRRD, TIFF (single or multi-page) and PNG/JPEG/BMP
(see :func:`pyconv_monai.data.get_reader`). Arrays are rows first, ``(1, H, W)`` as displayed: 2D files as stored,
volumes after MONAI's ``Orientation`` to ``axcodes`` (default ``"PLS"``: rows run anterior to posterior, columns
patient right to left, slices inferior to superior, i.e. axial slices in radiological display). TIFF stacks and 2D
files carry no geometry and are not reoriented.

Every loaded image is checked: one grayscale channel (RGB with three equal channels is accepted as gray), finite
values, and, for several keys, equal shapes and the same voxel grid in the world.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform, Orientation, ResampleToMatch, Transform
from monai.utils import ImageMetaKey, TransformBackends
from pyconv_monai.data.formats import GEOMETRY_KINDS, get_reader, image_kind
from pyconv_monai.data.geometry import geometry_mismatch, take_slice
from pyconv_monai.data.headers import MAX_VOXELS, check_nifti_header, check_nrrd_header, parse_spacing
from pyconv_monai.data.meta import tracking_meta

__all__ = ["LoadSlice2D", "LoadSlice2Dd", "LoadVolume", "LoadVolumed", "align_to_reference"]

NONFINITE_POLICIES = ("raise", "fill")
_AXES = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}


def _output(img: torch.Tensor, track: bool) -> torch.Tensor:
    return img if track or not isinstance(img, MetaTensor) else img.as_tensor()


def _path_str(path: Any, key: Hashable | None = None) -> str:
    if not isinstance(path, (str, os.PathLike)):
        where = f"item[{key!r}]" if key is not None else "filename"
        raise TypeError(f"{where} must be a file or folder path, got {type(path).__name__}.")
    return os.path.abspath(os.fspath(path))


def _source(value: Any, key: Hashable | None = None) -> str | tuple[str, ...]:
    """A path, or the files of one DICOM series (a list or tuple of paths), as absolute paths."""
    if isinstance(value, (list, tuple)):
        if not value:
            where = f"item[{key!r}]" if key is not None else "filename"
            raise ValueError(f"{where} is an empty list; expected a path or the files of one DICOM series.")
        return tuple(_path_str(v, key) for v in value)
    return _path_str(value, key)


def _name(source: str | tuple[str, ...]) -> str:
    """How messages name a source: its path, or the folder of a DICOM series given by its files."""
    return source if isinstance(source, str) else os.path.dirname(source[0])


def _kind(source: str | tuple[str, ...]) -> str:
    """:func:`pyconv_monai.data.image_kind`; ``"dicom_series"`` for a list of DICOM files."""
    if isinstance(source, str):
        return image_kind(source)
    for path in source:
        try:
            kind = image_kind(path)
        except (FileNotFoundError, ValueError) as e:  # a slice missing or unreadable: no volume from the others
            raise type(e)(
                f"{os.path.dirname(path)}: the DICOM series is incomplete, one of its {len(source)} files cannot be "
                f"read, so no volume is built from the others: {e}"
            ) from e
        if kind != "dicom":
            raise ValueError(f"{path}: not a DICOM image file; a list of files must be the DICOM files of one series.")
    return "dicom_series"


def _grayscale(img: MetaTensor, path: str, picture: bool) -> MetaTensor:
    """One channel: RGB(A)/LA pictures whose colour channels are equal (and alpha constant) become gray."""
    c = img.shape[0]
    if c == 1:
        return img
    if picture and c in (2, 3, 4):
        colour = img[:1] if c == 2 else img[:3]
        alpha = img[c - 1] if c in (2, 4) else None
        same = all(torch.equal(colour[0], colour[i]) for i in range(1, colour.shape[0]))
        opaque = alpha is None or bool((alpha == alpha.flatten()[0]).all())
        if same and opaque:
            return img[:1]
        raise ValueError(
            f"{path}: a colour image ({c} channels with different values); expected grayscale. Convert it first, "
            "e.g. with Pillow: Image.open(path).convert('L')."
        )
    raise ValueError(f"{path}: {c} channels (a multi-channel or 4D image); expected one grayscale channel.")


def _finite(img: MetaTensor, path: str, policy: str) -> MetaTensor:
    """Raise on NaN/Inf, or (``policy="fill"``) replace them by the smallest finite value with a warning."""
    raw = img.as_tensor()
    if not raw.is_floating_point() or bool(torch.isfinite(raw).all()):
        return img
    bad = ~torch.isfinite(raw)
    n = int(bad.sum())
    if policy == "raise":
        raise ValueError(
            f"{path}: {n} NaN/Inf voxel(s) ({100.0 * n / bad.numel():.3g} % of the image). Fix the file, or load it "
            "with nonfinite='fill' to replace them by the smallest finite value."
        )
    finite = raw[~bad]
    fill = float(finite.min()) if finite.numel() else 0.0
    warnings.warn(f"{path}: replaced {n} NaN/Inf voxel(s) by {fill:g} (nonfinite='fill').", stacklevel=3)
    return img.masked_fill(bad, fill)


def align_to_reference(
    img: MetaTensor, path: str, ref: MetaTensor, ref_path: str, resample: bool = False, tol: float = 0.05
) -> MetaTensor:
    """Return ``img`` if it lies on ``ref``'s voxel grid; resample it there (nearest neighbour) or raise.

    Args:
        img: channel-first label (or second image).
        path: its file, for messages.
        ref: channel-first reference image.
        ref_path: its file, for messages.
        resample: resample onto ``ref``'s grid (nearest neighbour, zeros outside) with a warning instead of raising.
        tol: grid tolerance as a fraction of a voxel (see :func:`pyconv_monai.data.geometry_mismatch`).

    Raises:
        ValueError: the grids differ and ``resample`` is False.
    """
    problem = geometry_mismatch(img, ref, tol=tol)
    if problem is None:
        return img
    if not resample:
        raise ValueError(
            f"{path} does not line up with {ref_path}: {problem}. If both cover the same anatomy on different grids, "
            "load with resample_labels=True to resample it onto the image grid (nearest neighbour)."
        )
    warnings.warn(f"{path} is not on the grid of {ref_path} ({problem}); resampled onto it (nearest).", stacklevel=3)
    out = ResampleToMatch(mode="nearest", padding_mode="zeros")(img, ref)
    out.meta[ImageMetaKey.FILENAME_OR_OBJ] = img.meta.get(ImageMetaKey.FILENAME_OR_OBJ, path)
    return out


class _LRU:
    """A small thread-safe LRU cache of loaded volumes; copies and pickles empty (for DataLoader workers).

    Threads asking for the same key wait for one load; different keys load in parallel.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.items: OrderedDict = OrderedDict()
        self.loading: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, make: Any) -> Any:
        if self.size <= 0:
            return make()
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            key_lock = self.loading.setdefault(key, threading.Lock())
        with key_lock:
            with self.lock:
                if key in self.items:
                    return self.items[key]
            value = make()
            with self.lock:
                self.items[key] = value
                self.loading.pop(key, None)
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
        return value

    def __getstate__(self) -> dict:
        return {"size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["size"])  # type: ignore[misc]

    def __deepcopy__(self, memo: dict) -> _LRU:
        return _LRU(self.size)


class LoadVolume(Transform):
    """Load an image file or DICOM series as a channel-first ``(1, H, W, N)`` volume, oriented to ``axcodes``.

    2D files give ``(1, H, W, 1)``; TIFF stacks ``(1, H, W, pages)``. Files with patient geometry (DICOM, NIfTI,
    NRRD) are reoriented with MONAI's ``Orientation``, so slicing the last axis gives 2D slices in display order
    (``"PLS"``: axial, radiological). Multi-channel images, colour images and NaN/Inf values raise ``ValueError``
    naming the file (RGB with equal channels is read as gray; ``nonfinite="fill"`` replaces NaN/Inf with a warning).
    A DICOM series is given by its folder (with ``series_uid`` where the folder holds several) or by the list of its
    files (as :func:`pyconv_monai.data.find_cases` lists them), read with :class:`pyconv_monai.data.DicomSeriesReader`.

    Geometry is required, not invented: a NIfTI file without a usable geometry (qform and sform codes 0, zero voxel
    sizes, a singular sform, qform/sform/pixdim disagreeing on the voxel size) or a DICOM series without
    PixelSpacing (or a single slice without SliceThickness) raises ``ValueError`` naming the file and the reason,
    unless ``assume_spacing`` gives the voxel size; the volume then carries that affine and its meta
    ``assumed_spacing`` and ``geometry_note`` say so. Otherwise the volume's ``original_affine`` is the file's own.
    Headers claiming more voxels than the file holds or than ``max_voxels`` are refused before reading
    (:func:`pyconv_monai.data.check_nifti_header`).

    Args:
        axcodes: target orientation of volumes with geometry, ``None`` to keep the stored one.
        dtype: output dtype.
        nonfinite: ``"raise"`` or ``"fill"`` (smallest finite value, with a warning).
        cache_size: number of volumes kept in memory (0: none); cached volumes are returned as copies.
        assume_spacing: voxel size in mm along the stored array axes (``"1,1,3"`` or three numbers) for NIfTI files
            and DICOM series whose headers have no usable geometry; ``None`` refuses them.
        max_voxels: refuse NIfTI/NRRD headers claiming more voxels.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        axcodes: str | None = "PLS",
        dtype: DtypeLike = np.float32,
        nonfinite: str = "raise",
        cache_size: int = 0,
        assume_spacing: str | Sequence[float] | None = None,
        max_voxels: int = MAX_VOXELS,
    ) -> None:
        self.assume_spacing = parse_spacing(assume_spacing)
        self.max_voxels = int(max_voxels)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}.")
        if axcodes is not None and sorted(_AXES.get(c, -1) for c in axcodes.upper()) != [0, 1, 2]:
            raise ValueError(f"axcodes must be three orientation letters such as 'PLS', got {axcodes!r}.")
        self.axcodes = axcodes
        self.dtype = dtype
        self.nonfinite = nonfinite
        self._cache = _LRU(cache_size)
        self._loader = LoadImage(image_only=True, ensure_channel_first=True, dtype=dtype)

    def __call__(
        self, filename: str | os.PathLike | Sequence[str | os.PathLike], series_uid: str | None = None
    ) -> MetaTensor:
        """
        Args:
            filename: file, DICOM series folder, or the files of one DICOM series.
            series_uid: the series to read from a DICOM folder holding several.

        Raises:
            FileNotFoundError: the path (or a file of the list) does not exist.
            ValueError: unsupported, unreadable or truncated file; several DICOM series and none chosen; irregular
                DICOM geometry; not grayscale; NaN/Inf values.
        """
        with tracking_meta() as track:
            vol = self.cached(filename, series_uid)
            return _output(vol.clone() if self._cache.size > 0 else vol, track)

    def cached(
        self, filename: str | os.PathLike | Sequence[str | os.PathLike], series_uid: str | None = None
    ) -> MetaTensor:
        """Like ``__call__``, but returns the cached MetaTensor itself: callers must not modify it in place."""
        source = _source(filename)
        with tracking_meta():
            return self._cache.get(("volume", source, series_uid), lambda: self._load(source, series_uid))

    def _read(
        self, path: str | tuple[str, ...], series_uid: str | None = None, page: int | None = None
    ) -> tuple[MetaTensor, str]:
        """Read channel-first with the right MONAI reader and check it; returns the image and its kind.

        Exceptions of the format libraries are re-raised as ``ValueError`` naming the file.
        """
        kind, name = _kind(path), _name(path)
        assumed = None
        if kind == "nifti":  # before any pixel is read: a size the file holds, a stored geometry
            assumed = check_nifti_header(name, self.assume_spacing, self.max_voxels)
        elif kind == "nrrd":
            check_nrrd_header(name, self.max_voxels)
        options: dict[str, Any] = {} if page is None else {"page": page}
        if kind in ("dicom", "dicom_series") and self.assume_spacing is not None:
            options["assume_spacing"] = self.assume_spacing
        reader = get_reader(name, series_uid=series_uid, kind=kind, **options)
        try:
            img = self._loader(path, reader=reader)
        except (ValueError, FileNotFoundError):
            raise
        except Exception as e:  # nibabel, Pillow, pynrrd, zlib errors on truncated or corrupt files
            raise ValueError(f"{name}: cannot read the image ({type(e).__name__}: {e}); is the file complete?") from e
        if assumed is not None:
            warnings.warn(f"{name}: {assumed.message()}.", stacklevel=3)
            img.affine = torch.as_tensor(assumed.affine, dtype=torch.float64)
            img.meta[ImageMetaKey.FILENAME_OR_OBJ] = img.meta.get(ImageMetaKey.FILENAME_OR_OBJ, name)
            img.meta["original_affine"] = assumed.affine.copy()
            img.meta["assumed_spacing"] = list(assumed.spacing)
            img.meta["geometry_note"] = assumed.message()
        img = _grayscale(img, name, picture=kind in ("image2d", "tiff"))
        return _finite(img, name, self.nonfinite), kind

    def _load(self, path: str | tuple[str, ...], series_uid: str | None) -> MetaTensor:
        img, kind = self._read(path, series_uid)
        if img.ndim == 3:  # a 2D image: a volume of one slice
            img = img.unsqueeze(-1)
        if img.ndim != 4:
            shape = tuple(img.shape[1:])
            raise ValueError(f"{_name(path)}: spatial shape {shape}; expected a 2D image or a 3D volume.")
        if self.axcodes is not None and kind in GEOMETRY_KINDS:
            img = Orientation(axcodes=self.axcodes, labels=None)(img)
        return img


def _slice(vol: MetaTensor, index: int | None, path: str) -> MetaTensor:
    """Slice ``index`` of the last axis (``None`` for volumes of one slice), with a message naming the file."""
    n = vol.shape[-1]
    if index is None:
        if n != 1:
            raise ValueError(f"{path} holds {n} slices; the item must give which one (e.g. 'slice': 0).")
        index = 0
    if not 0 <= int(index) < n:
        raise ValueError(f"{path}: slice {index} out of range; it holds {n} slice(s) (0 to {n - 1}).")
    return take_slice(vol, int(index))


class LoadSlice2D(Transform):
    """Load one 2D slice ``(1, H, W)`` of any supported file: a 2D image, a page of a TIFF stack, or a slice of a
    volume (DICOM series, NIfTI, NRRD, DICOM SEG) along the last axis after orientation to ``axcodes``.

    TIFF pages are read alone; volumes are read whole and kept in a small cache (``cache_size``), so iterate over
    the slices of one volume together (or cache the results with MONAI's ``CacheDataset``). The slice's affine
    is the volume's, moved to the slice, so it still maps its pixels to world coordinates. Checks as
    :class:`LoadVolume`.

    Args:
        axcodes: orientation volumes are brought to before slicing (``"PLS"``: axial slices in radiological display;
            ``"ALS"``: vertically flipped, as the liver_ct_2d PNGs).
        dtype: output dtype.
        nonfinite: ``"raise"`` or ``"fill"``.
        cache_size: number of volumes kept in memory.
        assume_spacing, max_voxels: see :class:`LoadVolume`.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        axcodes: str | None = "PLS",
        dtype: DtypeLike = np.float32,
        nonfinite: str = "raise",
        cache_size: int = 2,
        assume_spacing: str | Sequence[float] | None = None,
        max_voxels: int = MAX_VOXELS,
    ) -> None:
        self.volumes = LoadVolume(
            axcodes=axcodes,
            dtype=dtype,
            nonfinite=nonfinite,
            cache_size=cache_size,
            assume_spacing=assume_spacing,
            max_voxels=max_voxels,
        )

    def __call__(
        self, filename: str | os.PathLike, slice_index: int | None = None, series_uid: str | None = None
    ) -> MetaTensor:
        """
        Args:
            filename: file or DICOM series folder.
            slice_index: which slice or page; may be omitted for files holding one.
            series_uid: the series to read from a DICOM folder holding several.

        Raises:
            ValueError: as :class:`LoadVolume`, and a missing or out-of-range slice index.
        """
        with tracking_meta() as track:
            return _output(self._load(_path_str(filename), slice_index, series_uid), track)

    def _load(self, path: str, slice_index: int | None, series_uid: str | None) -> MetaTensor:
        kind = image_kind(path)
        if kind in ("tiff", "image2d"):
            if kind == "tiff" and slice_index is not None:
                img, _ = self.volumes._read(path, page=int(slice_index))
                img.meta["slice"] = int(slice_index)
                return img
            img, _ = self.volumes._read(path)
            if img.ndim == 3:
                if slice_index not in (None, 0):
                    raise ValueError(f"{path}: slice {slice_index} out of range; it is a single 2D image.")
                img.meta["slice"] = 0
                return img
            return _slice(img, slice_index, path)  # a TIFF stack without a page: only valid with one page
        return _slice(self.volumes.cached(path, series_uid), slice_index, path)


class LoadVolumed(MapTransform):
    """Dictionary version of :class:`LoadVolume`; later keys (labels) must lie on the first key's voxel grid.

    Training and evaluation load volumes with it, and so does the first step of the bundles' inference
    ``preprocessing``: ``{"image": path, "files": the files of a DICOM series, "series_uid": ...}`` (a case of
    :func:`pyconv_monai.data.find_cases`). An item whose first key already holds an image (a tensor or array, as
    MONAI Deploy's and MONAI Label's ``preprocessing`` receive it) is passed on unchanged, so a client that loads the
    image itself runs the same recipe. Meta of loaded files: ``kind`` (:func:`pyconv_monai.data.image_kind`) and
    ``original_channel_dim`` 0 (the output is channel first, so a following ``EnsureChannelFirstd`` keeps it); DICOM
    series add ``modality``, ``series_uid``, ``series_description``.

    Args:
        keys: keys of the paths to load (the first key may hold the files of one DICOM series); the first is the
            reference image.
        series_uid_key: item key holding the DICOM series of the first key, where its folder holds several.
        files_key: item key holding the files of the first key's DICOM series (read instead of its folder when the
            item has it; ``None``: never).
        axcodes: see :class:`LoadVolume`.
        dtype: output dtype.
        nonfinite: ``"raise"`` or ``"fill"``.
        resample_labels: resample later keys onto the first key's grid (nearest) instead of raising when they differ.
        tol: grid tolerance as a fraction of a voxel.
        cache_size: number of volumes kept in memory.
        allow_missing_keys: don't raise for missing keys.
        assume_spacing, max_voxels: see :class:`LoadVolume`.
    """

    backend = LoadVolume.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        series_uid_key: str = "series_uid",
        files_key: str | None = "files",
        axcodes: str | None = "PLS",
        dtype: DtypeLike = np.float32,
        nonfinite: str = "raise",
        resample_labels: bool = False,
        tol: float = 0.05,
        cache_size: int = 0,
        allow_missing_keys: bool = False,
        assume_spacing: str | Sequence[float] | None = None,
        max_voxels: int = MAX_VOXELS,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.series_uid_key = series_uid_key
        self.files_key = files_key
        self.resample_labels = resample_labels
        self.tol = tol
        self.volumes = LoadVolume(
            axcodes=axcodes,
            dtype=dtype,
            nonfinite=nonfinite,
            cache_size=cache_size,
            assume_spacing=assume_spacing,
            max_voxels=max_voxels,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref: tuple[MetaTensor, str] | None = None
        with tracking_meta() as track:
            for i, key in enumerate(self.key_iterator(d)):
                if i == 0 and isinstance(d[key], (torch.Tensor, np.ndarray)):
                    d[key] = d[key] if isinstance(d[key], MetaTensor) else MetaTensor(d[key])  # loaded by a client
                    ref = (d[key], str(d[key].meta.get(ImageMetaKey.FILENAME_OR_OBJ, key)))
                    continue
                files = d.get(self.files_key) if i == 0 and self.files_key else None
                source = _source(files or d[key], key) if i == 0 else _path_str(d[key], key)
                vol = self.volumes.cached(source, d.get(self.series_uid_key) if i == 0 else None)
                if self.volumes._cache.size > 0:
                    vol = vol.clone()
                vol.meta["kind"] = "dicom_series" if isinstance(source, tuple) else image_kind(source)
                vol.meta["original_channel_dim"] = 0
                if ref is None:
                    ref = (vol, _name(source))
                else:
                    vol = align_to_reference(vol, _name(source), ref[0], ref[1], self.resample_labels, self.tol)
                d[key] = vol
            for key in self.key_iterator(d):
                d[key] = _output(d[key], track)
        return d


class LoadSlice2Dd(MapTransform):
    """Load one 2D slice ``(1, H, W)`` per key from a datalist item (see :func:`pyconv_monai.data.load_datalist`).

    Items from stacks and volumes name the slice with ``slice_key``; 2D files need none. The first key is the
    reference: later keys (labels) must have the same slice shape, and volumes must lie on its voxel grid in the
    world (checked on the whole volumes, once per pair); otherwise a ``ValueError`` names both files (or, with
    ``resample_labels=True``, the label volume is resampled onto the image grid, nearest neighbour, with a warning).
    The output meta has the slice index under ``"slice"``.

    Orientation: 2D files are used as stored (liver_ct_2d PNGs are vertically flipped compared with radiological
    display; that is kept, and models trained on them need volumes oriented ``"ALS"``); volumes are sliced along
    the last axis after orientation to ``axcodes`` (``"PLS"``: axial, radiological display, as the lung_ct_2d TIFFs).

    Args:
        keys: keys of the paths; the first is the reference image.
        slice_key: item key of the slice index.
        series_uid_key: item key of the DICOM series of the first key, where its folder holds several.
        axcodes: see :class:`LoadSlice2D`.
        dtype: output dtype (labels too; MONAI's transforms and losses take float labels).
        nonfinite: ``"raise"`` or ``"fill"``.
        resample_labels: resample label volumes on another grid instead of raising.
        tol: grid tolerance as a fraction of a voxel.
        cache_size: number of volumes kept in memory (image and label count separately).
        allow_missing_keys: don't raise for missing keys.
        assume_spacing, max_voxels: see :class:`LoadVolume`.
    """

    backend = LoadSlice2D.backend

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        slice_key: str = "slice",
        series_uid_key: str = "series_uid",
        axcodes: str | None = "PLS",
        dtype: DtypeLike = np.float32,
        nonfinite: str = "raise",
        resample_labels: bool = False,
        tol: float = 0.05,
        cache_size: int = 4,
        allow_missing_keys: bool = False,
        assume_spacing: str | Sequence[float] | None = None,
        max_voxels: int = MAX_VOXELS,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key
        self.series_uid_key = series_uid_key
        self.resample_labels = resample_labels
        self.tol = tol
        self.loader = LoadSlice2D(
            axcodes=axcodes,
            dtype=dtype,
            nonfinite=nonfinite,
            cache_size=cache_size,
            assume_spacing=assume_spacing,
            max_voxels=max_voxels,
        )
        self._aligned = _LRU(cache_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        with tracking_meta() as track:
            for key, img in self._load(d).items():
                d[key] = _output(img, track)
        return d

    def _load(self, d: dict) -> dict[Hashable, MetaTensor]:
        index = d.get(self.slice_key)
        out: dict[Hashable, MetaTensor] = {}
        ref: tuple[Any, str, Any] | None = None  # (volume or None, path, slice)
        for i, key in enumerate(self.key_iterator(d)):
            path = _path_str(d[key], key)
            uid = d.get(self.series_uid_key) if i == 0 else None
            vol = None
            if image_kind(path) in GEOMETRY_KINDS:
                vol = self.loader.volumes.cached(path, uid)
                if ref is not None and ref[0] is not None:
                    ref_vol, ref_path = ref[0], ref[1]
                    vol = self._aligned.get(
                        (path, ref_path, d.get(self.series_uid_key)),
                        lambda: align_to_reference(vol, path, ref_vol, ref_path, self.resample_labels, self.tol),
                    )
                img = _slice(vol, index, path)
            else:
                img = self.loader._load(path, index, None)
            if ref is None:
                ref = (vol, path, img)
            elif tuple(img.shape[1:]) != tuple(ref[2].shape[1:]):
                raise ValueError(
                    f"{path}: slice shape {tuple(img.shape[1:])} does not match {tuple(ref[2].shape[1:])} of {ref[1]}."
                )
            out[key] = img
        return out
