# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Dictionary transforms MONAI lacks: loading 2D slices of any format, CT windows, EM normalisation, label
binarisation and mapping, the U-Net border weight map, in-plane resampling of slices to a pixel spacing (invertible),
and the papers' augmentations."""

from .augment import RandElasticDeformd, pyconvunet_augmentation, unet_augmentation
from .branch import ByGeometryd, has_geometry
from .intensity import CT_WINDOWS, CTWindow, CTWindowd, NormalizeEM, NormalizeEMd, ct_window_range
from .io import LoadSlice2D, LoadSlice2Dd, LoadVolume, LoadVolumed, align_to_reference
from .label import BinarizeLabel, BinarizeLabeld, MapLabels, MapLabelsd
from .modality import RequireModalityd
from .spacing import InPlaneSpacingd, in_plane_spacing
from .weight_map import BorderWeightMap, BorderWeightMapd, border_weight_map

__all__ = [
    "BinarizeLabel",
    "BinarizeLabeld",
    "BorderWeightMap",
    "BorderWeightMapd",
    "ByGeometryd",
    "CTWindow",
    "CTWindowd",
    "CT_WINDOWS",
    "InPlaneSpacingd",
    "LoadSlice2D",
    "LoadSlice2Dd",
    "LoadVolume",
    "LoadVolumed",
    "MapLabels",
    "MapLabelsd",
    "NormalizeEM",
    "NormalizeEMd",
    "RandElasticDeformd",
    "RequireModalityd",
    "align_to_reference",
    "border_weight_map",
    "ct_window_range",
    "has_geometry",
    "in_plane_spacing",
    "pyconvunet_augmentation",
    "unet_augmentation",
]
