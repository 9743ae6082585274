"""Compare two DICOM SEGs of one series voxel for voxel, slice by slice (matched by ImagePositionPatient).

``python deploy/liver_seg_app/compare.py <app output>/<uid>.dcm <segment output>/CT_Body_3.0_seg.dcm`` prints the
foreground voxels of each and the voxels where they differ, and exits 1 when they differ. Frames that a writer left
out (empty slices) count as all background.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom

__all__ = ["seg_masks", "compare"]


def seg_masks(path: str | Path) -> dict[tuple[float, float, float], np.ndarray]:
    """The binary frames of a DICOM SEG: ImagePositionPatient (rounded to 0.01 mm) -> (rows, columns) bool.

    Args:
        path: a DICOM SEG file (BINARY segmentation; every segment counts as foreground).

    Returns:
        one mask per position; frames at one position are ORed.
    """
    ds = pydicom.dcmread(path)
    if ds.SOPClassUID != "1.2.840.10008.5.1.4.1.1.66.4":
        raise ValueError(f"{path}: not a DICOM SEG (SOPClassUID {ds.SOPClassUID})")
    frames = ds.pixel_array.reshape(int(ds.get("NumberOfFrames", 1)), ds.Rows, ds.Columns)
    out: dict[tuple[float, float, float], np.ndarray] = {}
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        ipp = tuple(round(float(v), 2) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        out[ipp] = out.get(ipp, np.zeros(frame.shape, bool)) | (frame > 0)
    return out


def compare(a: str | Path, b: str | Path) -> tuple[int, int, int]:
    """Foreground voxels of SEG ``a``, of SEG ``b``, and voxels where they differ.

    Args:
        a: a DICOM SEG.
        b: a DICOM SEG of the same series.

    Returns:
        ``(foreground a, foreground b, differing voxels)``.
    """
    ma, mb = seg_masks(a), seg_masks(b)
    shape = next(iter({**ma, **mb}.values())).shape
    empty = np.zeros(shape, bool)
    diff = sum(int((ma.get(p, empty) != mb.get(p, empty)).sum()) for p in set(ma) | set(mb))
    return sum(int(m.sum()) for m in ma.values()), sum(int(m.sum()) for m in mb.values()), diff


if __name__ == "__main__":
    fa, fb, d = compare(sys.argv[1], sys.argv[2])
    print(f"foreground voxels: {fa} and {fb}; differing voxels: {d}")
    sys.exit(1 if d else 0)
