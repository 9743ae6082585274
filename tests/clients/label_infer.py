"""Run one bundle through MONAI Label's own ``BundleInferTask`` (run in the venv where ``monailabel`` is installed).

``python tests/clients/label_infer.py <bundle folder> <image path> <result.json>`` writes ``{"label": <a .npy beside
result.json: the mask MONAI Label hands its writer>, "labels": <its label names -> values>}``. The request asks for
the array (``result_write_to_file: false``), so that the mask is compared as MONAI Label made it, not as a file
format stores it. The bundle folder is used as MONAI
Label uses it (``bundle_root`` set to it, ``models/model.pt`` loaded into ``network_def``); nothing is changed in it.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from monailabel.tasks.infer.bundle import BundleInferTask


def main(bundle: str, image: str, out: str) -> None:
    task = BundleInferTask(bundle, {})  # as the monaibundle sample app builds it
    if not task.is_valid():
        raise SystemExit(f"MONAI Label does not accept the bundle {bundle}")
    label, _ = task({"image": image, "device": "cpu", "result_write_to_file": False})
    np.save(out + ".npy", np.asarray(label))
    with open(out, "w") as f:
        json.dump({"label": out + ".npy", "labels": task.labels}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
