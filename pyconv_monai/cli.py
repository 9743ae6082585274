# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""Console entry point ``pyconv-monai``: a short form of the bundles' commands.

``pyconv-monai segment IN OUT --bundle liver_ct_segmentation`` runs exactly ``python -m monai.bundle run
--config_file B/configs/inference.json --meta_file B/configs/metadata.json --logging_file B/configs/logging.conf
--bundle_root B --dataset_dir IN --output_dir OUT`` (plus the overrides given), with ``B`` the bundle's folder
(:func:`pyconv_monai.utils.bundle_dir`), through MONAI's ``ConfigWorkflow``.

``pyconv-monai export BUNDLE OUT`` checks a bundle as the Model Zoo's CI does and writes
``OUT/<name>_v<version>.zip`` (:func:`pyconv_monai.workflows.export.export_bundle`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyconv_monai.utils import bundle_dir, lazy_module, list_bundles

# imported on first use: ``--help`` and argument errors import no MONAI or torch (docs/performance.md, start-up)
monai_bundle = lazy_module("monai.bundle")
workflows = lazy_module("pyconv_monai.workflows")
workflows_export = lazy_module("pyconv_monai.workflows.export")
workflows_quantize = lazy_module("pyconv_monai.workflows.quantize")

__all__ = ["main", "segment"]


def segment(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    bundle: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    configure_logging: bool = True,
) -> list[dict]:
    """Run a bundle's ``inference.json`` on ``input_dir``, writing to ``output_dir``.

    Args:
        input_dir: a folder (DICOM series, NIfTI, NRRD, TIFF, 2D images) or one file.
        output_dir: the output folder.
        bundle: a bundle name or folder.
        overrides: more config overrides, e.g. ``{"overwrite": True, "device": "cpu", "batch_size": 8}``.
        configure_logging: apply the bundle's ``configs/logging.conf`` (INFO to stdout); False keeps the caller's
            logging set-up.

    Returns:
        the per-case rows of ``volumes.csv``.

    Raises:
        pyconv_monai.workflows.InferenceError: some cases failed (the others were written).
        FileNotFoundError, FileExistsError, ValueError: the run could not start (no input, an earlier run's
            ``volumes.csv``, no images, weights missing or unusable).
    """
    root = bundle_dir(bundle)
    configs = root / "configs"
    logging_file = configs / "logging.conf"
    workflow = monai_bundle.ConfigWorkflow(
        config_file=str(configs / "inference.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(logging_file) if configure_logging and logging_file.is_file() else False,
        workflow_type=None,
        bundle_root=str(root),
        dataset_dir=os.path.abspath(input_dir),
        output_dir=os.path.abspath(output_dir),
        **(overrides or {}),
    )
    workflow.initialize()
    try:
        rows = workflow.run()
    finally:
        workflow.finalize()
    return rows[-1] if isinstance(rows, list) and rows else rows  # the last expression of "run": the evaluator's


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyconv-monai", description="PyConvU-Net segmentation with MONAI bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment",
        help="segment every DICOM series, NIfTI/NRRD volume, TIFF stack or 2D image under IN into OUT",
        description="Writes <case>_seg.nii.gz (volumes; same affine as the input), <case>_seg.dcm (DICOM SEG, for "
        "DICOM series), <case>_seg.tif / .png (TIFF / 2D input) and volumes.csv. Exit status 1 when a case failed "
        "(the others are written), 2 when the run could not start.",
    )
    seg.add_argument("input", help="input folder (searched recursively) or one file")
    seg.add_argument("output", help="output folder")
    seg.add_argument("--bundle", required=True, help=f"bundle name ({', '.join(list_bundles())}) or bundle folder")
    seg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    seg.add_argument("--device", help="e.g. cpu, cuda:0 (default: cuda:0 if available)")
    seg.add_argument("--batch-size", type=int, help="slices per forward pass (default 4)")
    seg.add_argument("--ckpt-file", help="model weights (default: <bundle>/models/model.pt)")
    seg.add_argument("--network-name", help="network of the weights, if not the bundle's pyconvunet")
    seg.add_argument("--no-dicom-seg", action="store_true", help="do not write DICOM SEG objects")
    seg.add_argument(
        "--assume-spacing",
        metavar="X,Y,Z",
        help="voxel size in mm to assume for volumes whose header has no usable geometry (e.g. 1,1,3; otherwise "
        "they are refused); volumes.csv says so for each such case",
    )
    seg.add_argument("--no-progress", action="store_true", help="no progress bars")
    seg.add_argument(
        "--tta", action="store_true", help="test-time flip averaging (CT bundles; 3x the network time, see docs)"
    )
    seg.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnxruntime", "openvino"),
        help="what runs the network (default auto: on a CPU OpenVINO if installed, else ONNX Runtime, else torch; "
        "a runtime that is not installed falls back to torch)",
    )
    seg.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "int8"),
        help="arithmetic of the CPU runtime (the bundle's runtime_options precision; default auto: int8 where the "
        "bundle has an int8 calibration for its weights (models/model_int8.json, see quantize; not ONNX Runtime on an "
        "x86 CPU without VNNI, where its int8 saturates), else bf16 where the "
        "CPU has bfloat16 units (OpenVINO), each allowed by the bundle's measured Dice, see docs/performance.md; "
        "fp32: the exact path)",
    )
    exp = sub.add_parser(
        "export",
        help="check a bundle as the MONAI Model Zoo's CI does and write OUT/<name>_v<version>.zip",
        description="Checks layout, version and changelog, metadata.json against bundles/schemas (offline), "
        "verify_net_in_out, the train, train + evaluate, eval and infer workflow properties and a TorchScript "
        "export compared with the checkpoint, then writes <name>_v<version>.zip (the bundle, its pyconv_monai code, "
        "large_files.yml with the weights' URL and sha256; files over 25 MB are only listed there). Exit status 1 "
        "when a check failed (no zip is written), 2 when the export could not start.",
    )
    exp.add_argument("bundle", help=f"bundle name ({', '.join(list_bundles())}) or bundle folder")
    exp.add_argument("output", help="folder for the zip (an existing zip is never replaced)")
    exp.add_argument("--dataset-dir", help="data for the workflow property checks (default: the bundle's default)")
    exp.add_argument(
        "--weights-url",
        help="folder URL where models/model.pt and models/model.ts will be uploaded (large_files.yml names "
        "<URL>/<name>_v<version>_model.pt; default: a placeholder)",
    )
    qua = sub.add_parser(
        "quantize",
        help="calibrate a bundle for int8 on its training slices and write <bundle>/models/model_int8.json",
        description="Measures activation ranges on evenly spaced training slices (train.json's split and validation "
        "transforms), segments the whole validation split in fp32 and in int8 on each installed CPU runtime, and "
        "writes models/model_int8.json beside the weights only if every mean Dice changes by at most 0.002. Exit "
        "status 1 when int8 failed that rule (nothing is written), 2 when the run could not start.",
    )
    qua.add_argument("bundle", help=f"bundle name ({', '.join(list_bundles())}) or bundle folder")
    qua.add_argument("--dataset-dir", help="the training data (default: the bundle's train.json dataset_dir)")
    qua.add_argument("--slices", type=int, default=32, help="training slices to calibrate on (default 32)")
    qua.add_argument("--ckpt-file", help="the weights (default <bundle>/models/model.pt; the record goes beside them)")
    qua.add_argument("--overwrite", action="store_true", help="replace an existing model_int8.json")
    return parser


def _quantize(args: argparse.Namespace) -> int:
    """``pyconv-monai quantize``: 0 the record was written, 1 int8 failed the Dice rule, 2 it could not start."""
    try:
        workflows_quantize.quantize_bundle(
            bundle_dir(args.bundle), args.dataset_dir, args.slices, args.ckpt_file, args.overwrite, progress=print
        )
    except workflows_quantize.QuantizationRejected as e:
        print(f"pyconv-monai: quantize refused: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"pyconv-monai: error: {_cause(e)}", file=sys.stderr)
        return 2
    return 0


def _inference_config(bundle: str) -> tuple[Path, dict] | None:
    """A bundle's ``configs/inference.json`` and its raw (unparsed) content; ``None`` for an unknown bundle (then
    :func:`segment` reports it)."""
    try:
        config_file = bundle_dir(bundle) / "configs" / "inference.json"
    except FileNotFoundError:
        return None
    parser = monai_bundle.ConfigParser()
    parser.read_config(str(config_file))
    return config_file, parser.get()


def _passes_runtime(config: Any) -> bool:
    """Whether a component of a raw ``config`` (its ``RuntimeHandler``) takes the config's ``runtime`` as its own."""
    todo: list[Any] = [config]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            runtime = item.get("runtime")
            refs = monai_bundle.ReferenceResolver.match_refs_pattern(runtime) if isinstance(runtime, str) else {}
            if "_target_" in item and "runtime" in refs:
                return True
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


def _cause(e: BaseException) -> BaseException:
    """The first exception along the ``__cause__`` chain that is not MONAI's "Failed to evaluate" wrapper."""
    seen = set()
    while type(e) is RuntimeError and e.__cause__ is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__
    return e


def _export(args: argparse.Namespace) -> int:
    """``pyconv-monai export``: 0 the zip was written, 1 a check failed, 2 the export could not start."""
    try:
        root = bundle_dir(args.bundle)
        workflows_export.export_bundle(
            root, args.output, dataset_dir=args.dataset_dir, progress=print, weights_url=args.weights_url
        )
    except workflows_export.ExportError as e:
        print(f"pyconv-monai: export failed: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError) as e:
        print(f"pyconv-monai: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pyconv-monai`` command; returns the exit status (0 ok, 1 a case failed, 2 the run could not start)."""
    args = _parser().parse_args(argv)
    if args.command == "export":
        return _export(args)
    if args.command == "quantize":
        return _quantize(args)
    overrides: dict[str, Any] = {}
    if args.overwrite:
        overrides["overwrite"] = True
    if args.device:
        overrides["device"] = args.device
        overrides["amp"] = args.device.startswith("cuda")
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.ckpt_file:
        overrides["ckpt_file"] = os.path.abspath(args.ckpt_file)
    if args.network_name:
        overrides["network_name"] = args.network_name
    if args.no_dicom_seg:
        overrides["dicom_seg"] = False
    if args.assume_spacing:
        overrides["assume_spacing"] = args.assume_spacing
    if args.no_progress:
        overrides["progress"] = False
    if args.tta:
        overrides["tta"] = True
    inference = _inference_config(args.bundle) if args.runtime or args.precision else None
    if args.runtime:
        if inference is not None and not _passes_runtime(inference[1]):
            print(
                f"pyconv-monai: error: {inference[0]} does not pass the runtime to its RuntimeHandler (needs "
                '"runtime": "auto" and "runtime": "@runtime" among the RuntimeHandler\'s arguments)',
                file=sys.stderr,
            )
            return 2
        overrides["runtime"] = args.runtime
    if args.precision:
        if inference is not None and not isinstance(inference[1].get("runtime_options"), dict):
            print(
                f"pyconv-monai: error: {inference[0]} has no runtime_options to set the precision in", file=sys.stderr
            )
            return 2
        overrides["runtime_options#precision"] = args.precision
    try:
        segment(args.input, args.output, args.bundle, overrides)
    except Exception as e:  # MONAI wraps a failing config expression in RuntimeError: report the cause
        cause = _cause(e)
        if isinstance(cause, workflows.InferenceError):
            print(f"pyconv-monai: {cause}", file=sys.stderr)
            return 1
        if isinstance(cause, (OSError, ValueError)):  # no input or weights, a busy or full output folder, ...
            print(f"pyconv-monai: error: {cause}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
