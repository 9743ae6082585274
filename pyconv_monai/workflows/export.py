# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""From a bundle folder to a MONAI Model Zoo zip, after the checks the Model Zoo's CI runs.

:func:`export_bundle` checks the bundle (layout, version and changelog, ``metadata.json`` against the schema in
``bundles/schemas`` offline, ``verify_net_in_out``, MONAI workflow properties of ``train.json`` and
``inference.json``, TorchScript ``ckpt_export`` and a load-and-compare of the exported module against the
checkpoint-loaded network) and only then writes ``<name>_v<version>.zip``, the way the Model Zoo distributes
bundles: one top folder ``<name>/`` with ``configs/``, ``models/``, ``docs/``, ``LICENSE``.

The zip carries the code its configs name: a copy of the ``pyconv_monai`` package at the bundle root, so that
``python -m monai.bundle run --config_file configs/inference.json`` run from the unzipped bundle folder imports
it (Python puts the working directory, and MONAI the bundle root, on ``sys.path``) without ``pyconv-monai``
installed. ``configs/metadata.json`` in the zip therefore declares, instead of ``pyconv-monai`` (not on PyPI),
the third-party packages that code imports, at their installed versions where these install on the zoo's CI
Python (:data:`ZOO_PYTHON`, 3.10), else at the versions of :data:`ZOO_PYTHON_VERSIONS` (checked there).

The weights travel as the zoo's bundles carry them: ``large_files.yml`` lists ``models/model.pt`` and
``models/model.ts`` with a download URL (``weights_url``) and their sha256 (``hash_val``/``hash_type``), so that
the zoo's git keeps them out (its pre-commit refuses files over 1 MB). Files up to ``max_file_mb`` (25 MB) stay in the
zip as well, so an unzipped bundle runs offline with its local weights (the zoo's ``download_large_files`` skips a
file that is present with the listed hash); larger files are only listed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyconv_monai
import torch
from monai.handlers import CheckpointLoader
from pyconv_monai.utils import bundles_root
from pyconv_monai.workflows.inference import load_checkpoint

__all__ = [
    "ExportError",
    "ZOO_MAX_FILE_MB",
    "ZOO_PYTHON",
    "ZOO_PYTHON_VERSIONS",
    "CHECKS",
    "export_bundle",
    "zoo_metadata",
    "zoo_version",
    "large_files_yaml",
    "weights_urls",
]

logger = logging.getLogger(__name__)

ZOO_MAX_FILE_MB = 25.0  # the Model Zoo keeps files over 25 MB out of git and lists them in large_files.yml
SCHEMAS_DIR = bundles_root() / "schemas"
PLACEHOLDER_URL = "PLACEHOLDER: upload this file and put its download URL here"
WEIGHTS = ("models/model.pt", "models/model.ts")  # listed in large_files.yml whatever their size
# the Python of the Model Zoo's premerge CI (.github/workflows/premerge-cpu.yml: 3.10.14)
ZOO_PYTHON = "3.10"
# the newest release that installs on ZOO_PYTHON, for packages whose installed release needs a newer Python;
# `pip install -r` of the zoo's get_bundle_requirements.py output with these was run on Python 3.10.13
# (docs/model_zoo.md)
ZOO_PYTHON_VERSIONS = {
    "numpy": "2.2.6",
    "scipy": "1.15.3",
    "pillow": "12.3.0",
    "tifffile": "2025.5.10",
    "onnxruntime": "1.23.2",
}
# the checks, in the order they run (names used in ExportError)
CHECKS = (
    "layout",
    "version and changelog",
    "metadata schema",
    "verify_net_in_out",
    "workflow properties (train)",
    "workflow properties (train + evaluate)",
    "workflow properties (eval)",
    "workflow properties (infer)",
    "torchscript export",
)
# entries of metadata.json that name versions themselves (not required_packages_version)
_OWN_KEYS = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}
_REQUIRED_FILES = ("configs/metadata.json", "configs/inference.json", "configs/train.json", "LICENSE", "docs/README.md")


class ExportError(RuntimeError):
    """A bundle failed one of the Model Zoo checks; ``check`` names it (one of :data:`CHECKS`)."""

    def __init__(self, check: str, bundle: str | os.PathLike, message: str) -> None:  # noqa: B042
        self.check = check
        self.bundle = str(bundle)
        super().__init__(f"{self.bundle}: check '{check}' failed: {message}")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_requirements(dist: str = "pyconv-monai") -> dict[str, str]:
    """Installed versions of the packages ``dist`` requires (no extras), except torch, monai and numpy."""
    found: dict[str, str] = {}
    for req in importlib.metadata.requires(dist) or []:
        if ";" in req:  # an extra's requirement
            continue
        name = re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].strip()
        if _norm(name) in _OWN_KEYS:
            continue
        found[name] = importlib.metadata.version(name)
    return found


def zoo_version(name: str, version: str, python: str = ZOO_PYTHON) -> str:
    """``version`` of package ``name``, or the release of :data:`ZOO_PYTHON_VERSIONS` where ``version`` is the
    installed release and that one needs a newer Python than ``python`` (its ``Requires-Python``).

    Raises:
        ValueError: the installed release does not install on ``python`` and the table has no release for it.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return version
    if Version(dist.version).base_version != Version(version).base_version:
        return version  # not the installed release: the bundle states it deliberately
    requires = dist.metadata.get("Requires-Python")
    if not requires or SpecifierSet(requires).contains(f"{python}.0"):
        return version
    for key, pinned in ZOO_PYTHON_VERSIONS.items():
        if _norm(key) == _norm(name):
            return pinned
    raise ValueError(
        f"{name} {version} needs Python {requires}, the Model Zoo's CI runs {python}: "
        f"add a release that installs there to ZOO_PYTHON_VERSIONS"
    )


def zoo_metadata(meta: dict[str, Any], carried: dict[str, str] | None = None) -> dict[str, Any]:
    """``metadata.json`` for the zip: ``pyconv-monai`` replaced by the packages the carried code imports, every
    version one that installs on the zoo's Python (:func:`zoo_version`).

    Args:
        meta: the bundle's metadata.
        carried: package name -> version needed by the carried code (default: the installed ``pyconv-monai``'s
            requirements at their installed versions).

    Returns:
        a copy of ``meta`` whose ``required_packages_version`` declares no ``pyconv-monai`` and every package of
        ``carried`` (versions the bundle already states are kept), and whose ``numpy_version``,
        ``pytorch_version``, ``monai_version`` and package versions install on :data:`ZOO_PYTHON`.
    """
    meta = copy.deepcopy(meta)
    carried = _package_requirements() if carried is None else carried
    for key in ("required_packages_version", "optional_packages_version"):
        if isinstance(meta.get(key), dict):
            meta[key] = {k: v for k, v in meta[key].items() if _norm(k) != "pyconv-monai"}
    required = meta.setdefault("required_packages_version", {})
    stated = {_norm(k) for k in required}
    for name, version in sorted(carried.items(), key=lambda kv: kv[0].lower()):
        if _norm(name) not in stated:
            required[name] = version
    for key in ("required_packages_version", "optional_packages_version"):
        if isinstance(meta.get(key), dict):
            meta[key] = {k: zoo_version(k, str(v)) for k, v in meta[key].items()}
    for name, key in _OWN_KEYS.items():
        if meta.get(key):
            meta[key] = zoo_version(name, str(meta[key]))
    return meta


def weights_urls(base_url: str | None, name: str, version: str) -> dict[str, str]:
    """Download URL of each file of :data:`WEIGHTS`: ``<base_url>/<name>_v<version>_<file name>`` (the zoo's
    naming, e.g. ``model_spleen_ct_segmentation_v1.pt``, is free; this one is unique per bundle and version), or
    :data:`PLACEHOLDER_URL` without ``base_url``."""
    if not base_url:
        return {path: PLACEHOLDER_URL for path in WEIGHTS}
    base = base_url.rstrip("/")
    return {path: f"{base}/{name}_v{version}_{path.rsplit('/', 1)[-1]}" for path in WEIGHTS}


def large_files_yaml(entries: list[dict[str, str]]) -> str:
    """The Model Zoo's ``large_files.yml`` text: ``path``, ``url``, ``hash_val``, ``hash_type`` per file."""
    lines = ["large_files:"]
    for e in entries:
        lines += [
            f'  - path: "{e["path"]}"',
            f'    url: "{e.get("url", PLACEHOLDER_URL)}"',
            f'    hash_val: "{e["hash_val"]}"',
            '    hash_type: "sha256"',
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _check(name: str, bundle: Path) -> Iterator[None]:
    logger.info(f"check '{name}'")
    try:
        yield
    except ExportError:
        raise
    except Exception as e:  # every failure of a check is reported under the check's name
        cause = e
        while type(cause) is RuntimeError and cause.__cause__ is not None:  # MONAI's "Failed to evaluate" wrapper
            cause = cause.__cause__
        text = f"{type(cause).__name__}: {cause}".strip()
        raise ExportError(name, bundle, text[:4000]) from e


def _schema_file(meta: dict[str, Any], schemas_dir: Path) -> Path:
    url = meta.get("schema")
    if not url:
        raise ValueError("metadata.json has no 'schema' URL")
    local = schemas_dir / url.rstrip("/").rsplit("/", 1)[-1]
    if not local.is_file():
        raise FileNotFoundError(f"no local copy of the schema {url} at {local} (the check runs offline)")
    return local


def _resolved(config: Path, bundle_root: Path, key: str) -> Any:
    """``key`` of ``config`` evaluated with the bundle in its place (``None`` if it cannot be evaluated)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle_root)
    try:
        return parser.get_parsed_content(key) if key in parser else None
    except Exception:
        return None


def _check_properties(
    config: Path | list[Path], meta: Path, bundle_root: Path, workflow_type: str, overrides: dict[str, Any]
) -> None:
    from monai.bundle import ConfigWorkflow

    configs = config if isinstance(config, list) else [config]
    workflow = ConfigWorkflow(
        config_file=[str(c) for c in configs] if len(configs) > 1 else str(configs[0]),
        meta_file=str(meta),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(bundle_root),
        **overrides,
    )
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise ValueError(f"{' + '.join(c.name for c in configs)} lacks the {workflow_type} properties {missing}")


def _compare_torchscript(ts_file: Path, config: Path, meta: dict[str, Any], ckpt: Path, bundle_root: Path) -> str:
    """Run the exported module and the network of ``config`` with ``ckpt`` loaded on one input; raise if they differ."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle_root)
    network = parser.get_parsed_content("network_def")
    load_checkpoint(CheckpointLoader(load_path=str(ckpt), load_dict={"model": network}, map_location="cpu"))
    network.eval()
    scripted = torch.jit.load(str(ts_file), map_location="cpu").eval()
    spec = meta["network_data_format"]["inputs"]["image"]
    shape = [1, int(spec.get("num_channels", 1)), *[int(s) for s in spec["spatial_shape"]]]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = network(x), scripted(x)
    if got.shape != expected.shape:
        raise ValueError(f"the exported module returns {tuple(got.shape)}, the network {tuple(expected.shape)}")
    diff = float((got - expected).abs().max())
    scale = float(expected.abs().max()) or 1.0
    if not diff <= 1e-4 * max(scale, 1.0):
        raise ValueError(f"the exported module differs from the checkpoint-loaded network: max |diff| {diff:.3g}")
    return f"max |diff| {diff:.3g} on input {shape}"


def _cpu_checkpoint(path: Path) -> list[str]:
    """Re-save ``path`` with every tensor on the CPU if it holds tensors saved on another device.

    Weights trained on a GPU keep their device in the file, and MONAI's ``ckpt_export`` (as the Model Zoo's CI
    runs it) loads them without ``map_location``: on a machine without that device it fails. The values are
    unchanged.

    Returns:
        the devices found other than ``cpu`` (empty: the file was left as it is).
    """
    devices: set[str] = set()

    def record(storage: Any, location: str) -> Any:
        devices.add(str(location))
        return storage

    state = torch.load(path, map_location=record, weights_only=True)
    others = sorted(d for d in devices if d != "cpu")
    if others:  # saved under the same file name (torch.save records it in the archive), then moved into place
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            torch.save(state, Path(tmp) / path.name)
            os.replace(Path(tmp) / path.name, path)
    return others


def _package_source() -> Path:
    return Path(pyconv_monai.__file__).resolve().parent


def _zip_members(staging: Path) -> list[Path]:
    return sorted(p for p in staging.rglob("*") if p.is_file())


def _bundle_files(root: Path) -> list[str]:
    """What goes into the zip from the bundle: configs/, docs/, LICENSE and models/model.pt (and models/README.md,
    models/model_int8.json, the int8 calibration record)."""
    files = []
    for sub in ("configs", "docs"):
        files += [p.relative_to(root).as_posix() for p in sorted((root / sub).rglob("*")) if p.is_file()]
    for name in ("LICENSE", "models/model.pt", "models/README.md", "models/model_int8.json"):
        if (root / name).is_file():
            files.append(name)
    return [f for f in files if "__pycache__" not in f and not f.endswith(".pyc")]


def export_bundle(
    bundle: str | os.PathLike,
    out_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    schemas_dir: str | os.PathLike = SCHEMAS_DIR,
    max_file_mb: float = ZOO_MAX_FILE_MB,
    progress: Callable[[str], None] | None = None,
    weights_url: str | None = None,
) -> Path:
    """Check ``bundle`` as the Model Zoo's CI does and write ``out_dir/<name>_v<version>.zip``.

    The checks run on temporary copies of the bundle (building a training workflow must not touch the original);
    the zip is written to a temporary file in ``out_dir`` and renamed only when complete, and an existing zip is
    never replaced.

    Args:
        bundle: the bundle folder (holding ``configs/metadata.json``).
        out_dir: where the zip goes (created if missing).
        dataset_dir: ``dataset_dir`` for the workflow property checks (default: the bundle's own default,
            evaluated with the bundle in its place).
        schemas_dir: folder holding the metadata schema named by ``metadata.json`` ``schema`` (checked offline).
        max_file_mb: files larger than this stay out of the zip (they are listed in ``large_files.yml``).
        progress: called with one line per finished check (default: the module's logger).
        weights_url: where ``models/model.pt`` and ``models/model.ts`` will be downloadable from (a folder URL;
            :func:`weights_urls`); ``large_files.yml`` names a placeholder without it.

    Returns:
        the path of the zip.

    Raises:
        ExportError: a check failed; ``.check`` names it. No zip is written.
        FileExistsError: the zip exists already.
    """
    say = progress or logger.info
    root = Path(bundle).resolve()
    name = root.name
    out_dir = Path(out_dir).resolve()
    meta_file = root / "configs" / "metadata.json"

    with _check("layout", root):
        missing = [f for f in (*_REQUIRED_FILES, "models/model.pt") if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"missing {', '.join(missing)} (a Model Zoo bundle needs them)")
        meta = json.loads(meta_file.read_text())
    say("layout: ok")

    with _check("version and changelog", root):
        version = meta.get("version")
        if not version or not re.fullmatch(r"\d+\.\d+\.\d+", str(version)):
            raise ValueError(f"metadata.json 'version' {version!r} is not MAJOR.MINOR.PATCH")
        if str(version) not in (meta.get("changelog") or {}):
            raise ValueError(f"metadata.json 'changelog' has no entry for version {version}")
    target = out_dir / f"{name}_v{version}.zip"
    if target.exists():
        raise FileExistsError(f"{target} exists; export never replaces a zip (remove it or bump the version)")
    say(f"version and changelog: ok ({version})")

    zoo_meta = zoo_metadata(meta)
    schema = None
    with _check("metadata schema", root):
        from monai.bundle import verify_metadata

        schema = _schema_file(zoo_meta, Path(schemas_dir))
    with tempfile.TemporaryDirectory(prefix=f"export_{name}_") as tmp:
        tmp = Path(tmp)
        staging = tmp / "zip" / name  # exactly what goes into the zip
        for rel in _bundle_files(root):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, staging / rel)
        (staging / "configs" / "metadata.json").write_text(json.dumps(zoo_meta, indent=4) + "\n")
        # the code only: not pyconv_monai/bundles, the shipped bundles a wheel install carries as package data
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "bundles")
        shutil.copytree(_package_source(), staging / "pyconv_monai", ignore=ignore)
        meta_in_zip = staging / "configs" / "metadata.json"

        with _check("metadata schema", root):
            verify_metadata(meta_file=str(meta_in_zip), filepath=str(schema))  # the schema exists: no download
        say(f"metadata schema: ok ({schema.name})")

        with _check("verify_net_in_out", root):
            from monai.bundle import verify_net_in_out

            verify_net_in_out(
                net_id="network_def",
                meta_file=str(meta_in_zip),
                config_file=str(staging / "configs" / "inference.json"),
                bundle_root=str(staging),
                device="cpu",
            )
        say("verify_net_in_out: ok")

        data = dataset_dir
        if data is None:  # the bundle's default data, as the bundle in its place would find it
            data = _resolved(root / "configs" / "train.json", root, "dataset_dir")
        overrides = {"dataset_dir": os.path.abspath(data)} if isinstance(data, (str, os.PathLike)) else {}
        # as the zoo's unit tests build them: train.json; train.json + evaluate.json as "train" and as "eval"
        cases = (
            ("train", "train", ["train.json"]),
            ("train + evaluate", "train", ["train.json", "evaluate.json"]),
            ("eval", "eval", ["train.json", "evaluate.json"]),
            ("infer", "infer", ["inference.json"]),
        )
        for i, (label, kind, configs) in enumerate(cases):
            if not all((staging / "configs" / c).is_file() for c in configs):
                say(f"workflow properties ({label}): skipped (no {' + '.join(configs)})")
                continue
            scratch = tmp / f"properties_{i}" / name  # initialize() may write or move files: a throw-away copy
            shutil.copytree(staging, scratch, ignore=shutil.ignore_patterns("pyconv_monai"))
            with _check(f"workflow properties ({label})", root):
                files = [scratch / "configs" / c for c in configs]
                _check_properties(files, scratch / "configs" / "metadata.json", scratch, kind, overrides)
            say(f"workflow properties ({label}): ok")

        with _check("torchscript export", root):
            from monai.bundle import ckpt_export

            moved = _cpu_checkpoint(staging / "models" / "model.pt")
            if moved:
                say(f"models/model.pt: tensors saved on {', '.join(moved)} are on the CPU in the zip (same values)")

            ts_file = staging / "models" / "model.ts"
            ckpt_export(
                net_id="network_def",
                filepath=str(ts_file),
                ckpt_file=str(staging / "models" / "model.pt"),
                meta_file=str(meta_in_zip),
                config_file=str(staging / "configs" / "inference.json"),
                bundle_root=str(staging),
            )
            compared = _compare_torchscript(
                ts_file, staging / "configs" / "inference.json", zoo_meta, staging / "models" / "model.pt", staging
            )
        say(f"torchscript export: ok ({compared})")

        urls = weights_urls(weights_url, name, str(version))
        large = []
        for path in _zip_members(staging):
            rel = path.relative_to(staging).as_posix()
            too_large = path.stat().st_size > max_file_mb * 1024 * 1024
            if rel in urls or too_large:
                large.append({"path": rel, "url": urls.get(rel, PLACEHOLDER_URL), "hash_val": _sha256(path)})
            if too_large:
                path.unlink()
                say(f"large file: {rel} ({path.name}) is listed in large_files.yml, not zipped")
        (staging / "large_files.yml").write_text(large_files_yaml(large))
        say(f"large_files.yml: {', '.join(e['path'] for e in large)} (sha256; url {weights_url or 'placeholder'})")

        out_dir.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=out_dir)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)  # mkstemp makes the file private; the zip is an ordinary output
        try:
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in _zip_members(staging):
                    zf.write(path, path.relative_to(staging.parent).as_posix())
            try:
                os.link(partial, target)  # fails if the target appeared meanwhile: never replaces a zip
            except FileExistsError:
                raise FileExistsError(f"{target} exists; export never replaces a zip") from None
            except OSError:  # no hard links here: rename, after checking again
                if target.exists():
                    raise FileExistsError(f"{target} exists; export never replaces a zip") from None
                os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    say(f"wrote {target}")
    return target
