"""``pyconv-monai export``: the Model Zoo checks, the zip's layout and contents, and the zip run on its own."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pyconv_monai.cli import main
from pyconv_monai.workflows.export import (
    CHECKS,
    PLACEHOLDER_URL,
    ZOO_PYTHON,
    ZOO_PYTHON_VERSIONS,
    ExportError,
    export_bundle,
    large_files_yaml,
    weights_urls,
    zoo_metadata,
    zoo_version,
)

from tests.conftest import REPO

EM = REPO / "bundles" / "neuron_em_segmentation"


def _copy_bundle(tmp_path: Path, name: str = "neuron_em_segmentation") -> Path:
    target = tmp_path / "bundles" / name
    shutil.copytree(REPO / "bundles" / name, target, ignore=shutil.ignore_patterns("eval", "*.ts", "model.*.pt"))
    return target


def _edit_metadata(bundle: Path, edit) -> None:
    path = bundle / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_zip_metadata_declares_the_carried_code_dependencies_not_pyconv_monai():
    meta = json.loads((EM / "configs" / "metadata.json").read_text())
    out = zoo_metadata({**meta, "required_packages_version": {"pyconv-monai": "0.1.0", "tifffile": "2024.1.1"}},
                       carried={"tifffile": "2026.1.1", "pydicom": "3.0.2", "SimpleITK": "2.5.7"})  # fmt: skip
    assert out["required_packages_version"] == {"tifffile": "2024.1.1", "pydicom": "3.0.2", "SimpleITK": "2.5.7"}
    assert meta["required_packages_version"].get("pyconv-monai"), "the input must be left as it was"
    installed = zoo_metadata(meta)["required_packages_version"]  # the installed pyconv-monai's requirements
    assert "pyconv-monai" not in installed and {"pydicom", "highdicom", "nibabel"} <= set(installed)
    assert not {"torch", "monai", "numpy"} & set(installed)  # pytorch_version, monai_version, numpy_version


def test_zoo_version_replaces_an_installed_release_that_needs_a_newer_python():
    import importlib.metadata

    numpy = importlib.metadata.version("numpy")
    assert zoo_version("numpy", numpy, python="3.0") == ZOO_PYTHON_VERSIONS["numpy"]  # numpy needs Python 3.x > 3.0
    assert zoo_version("numpy", "1.0.0", python="3.0") == "1.0.0"  # not the installed release: kept as stated
    assert zoo_version("not-a-package", "1.2.3", python="3.0") == "1.2.3"
    with pytest.raises(ValueError, match="ZOO_PYTHON_VERSIONS"):  # needs a newer Python, and no release in the table
        zoo_version("tqdm", importlib.metadata.version("tqdm"), python="2.7")


def test_zip_metadata_installs_on_the_zoo_python():
    """Every version the zip's metadata names is a release whose Requires-Python admits the zoo's Python, where it
    is the installed release (the others come from ZOO_PYTHON_VERSIONS, installed there by docs/model_zoo.md)."""
    import importlib.metadata

    from packaging.specifiers import SpecifierSet

    out = zoo_metadata(json.loads((EM / "configs" / "metadata.json").read_text()))
    named = {**out["required_packages_version"], "numpy": out["numpy_version"], "torch": out["pytorch_version"]}
    named["monai"] = out["monai_version"]
    for name, version in named.items():
        dist = importlib.metadata.distribution(name)
        if dist.version.split("+")[0] == version:
            requires = dist.metadata.get("Requires-Python") or ""
            assert SpecifierSet(requires).contains(f"{ZOO_PYTHON}.0"), (name, version, requires)
        else:
            assert version == ZOO_PYTHON_VERSIONS[name.lower()], (name, version)


def test_weights_urls_name_bundle_and_version():
    urls = weights_urls("https://example.org/w/", "neuron_em_segmentation", "0.3.2")
    assert urls == {
        "models/model.pt": "https://example.org/w/neuron_em_segmentation_v0.3.2_model.pt",
        "models/model.ts": "https://example.org/w/neuron_em_segmentation_v0.3.2_model.ts",
    }
    assert set(weights_urls(None, "x", "1.0.0").values()) == {PLACEHOLDER_URL}


def test_large_files_yaml_has_the_model_zoo_fields():
    text = large_files_yaml([{"path": "models/model.pt", "hash_val": "ab" * 32}])
    assert text.splitlines() == [
        "large_files:",
        '  - path: "models/model.pt"',
        '    url: "PLACEHOLDER: upload this file and put its download URL here"',
        f'    hash_val: "{"ab" * 32}"',
        '    hash_type: "sha256"',
    ]


@pytest.mark.parametrize(
    "edit, check",
    [
        (lambda m: m.update(version="0.9.0"), "version and changelog"),  # not in the changelog
        (lambda m: m.pop("task"), "metadata schema"),  # a field the schema requires
        (lambda m: m.update(schema="https://example.org/unknown_schema.json"), "metadata schema"),  # no local copy
    ],
)
def test_a_failed_check_is_named_and_writes_no_zip(tmp_path, edit, check):
    bundle = _copy_bundle(tmp_path)
    _edit_metadata(bundle, edit)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=re.escape(f"check '{check}' failed")) as e:
        export_bundle(bundle, out)
    assert e.value.check == check and check in CHECKS
    assert not out.exists() or not list(out.iterdir()), "a failed export left files behind"


def test_cli_reports_the_failed_check_with_exit_status_1(tmp_path, capsys):
    bundle = _copy_bundle(tmp_path)
    (bundle / "LICENSE").unlink()
    assert main(["export", str(bundle), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "check 'layout' failed" in err and "LICENSE" in err
    assert not (tmp_path / "out").exists()


def test_an_existing_zip_is_never_replaced(tmp_path, capsys):
    version = json.loads((EM / "configs" / "metadata.json").read_text())["version"]
    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"neuron_em_segmentation_v{version}.zip"
    existing.write_bytes(b"an earlier export")
    with pytest.raises(FileExistsError, match="never replaces"):
        export_bundle(EM, out)
    assert main(["export", "neuron_em_segmentation", str(out)]) == 2
    assert "never replaces" in capsys.readouterr().err
    assert existing.read_bytes() == b"an earlier export" and sorted(p.name for p in out.iterdir()) == [existing.name]


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip


@pytest.fixture(scope="module")
def em_zip(tmp_path_factory) -> Path:
    """The EM bundle exported once by the command line (every check runs)."""
    out = tmp_path_factory.mktemp("zoo")
    before = _snapshot(EM)
    done = subprocess.run(
        [sys.executable, "-m", "pyconv_monai.cli", "export", "neuron_em_segmentation", str(out)],
        cwd=out, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert _snapshot(EM) == before, "exporting changed the bundle"
    for check in CHECKS:
        assert f"{check}: ok" in done.stdout, (check, done.stdout)
    zips = list(out.glob("*.zip"))
    version = json.loads((EM / "configs" / "metadata.json").read_text())["version"]
    assert [p.name for p in zips] == [f"neuron_em_segmentation_v{version}.zip"]
    return zips[0]


def _isolated_python(tmp_path: Path) -> Path:
    """A Python with every installed package except ``pyconv_monai``: a venv whose site-packages points at ours.

    A ``.pth`` line adds our site-packages to ``sys.path`` but does not run the ``.pth`` files inside it, so the
    editable install's import hook for ``pyconv_monai`` is not installed.
    """
    import site

    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=300)
    python = env / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    (Path(own) / "_pyconv_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
def test_exported_zip_has_the_model_zoo_layout(em_zip):
    with zipfile.ZipFile(em_zip) as zf:
        names = set(zf.namelist())
        meta = json.loads(zf.read("neuron_em_segmentation/configs/metadata.json"))
        configs = {n: zf.read(n) for n in names if re.fullmatch(r"neuron_em_segmentation/configs/\w+\.json", n)}
    top = {n.split("/")[0] for n in names}
    assert top == {"neuron_em_segmentation"}, top
    for f in ["configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
              "configs/logging.conf", "docs/README.md", "LICENSE", "models/model.pt", "models/model.ts",
              "pyconv_monai/__init__.py", "pyconv_monai/workflows/inference.py"]:  # fmt: skip
        assert f"neuron_em_segmentation/{f}" in names, f
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/eval/" in n]
    # the weights are listed in large_files.yml (the zoo keeps them out of git) and zipped too (6 MB: under the limit)
    with zipfile.ZipFile(em_zip) as zf:
        zf_text = zf.read("neuron_em_segmentation/large_files.yml").decode()
        large = {p: hashlib.sha256(zf.read(f"neuron_em_segmentation/{p}")).hexdigest()
                 for p in ("models/model.pt", "models/model.ts")}  # fmt: skip
    listed = dict(zip(re.findall(r'- path: "([^"]+)"', zf_text), re.findall(r'hash_val: "([0-9a-f]{64})"', zf_text)))
    assert listed == large and zf_text.count('hash_type: "sha256"') == 2
    assert "pyconv-monai" not in meta["required_packages_version"] and "pydicom" in meta["required_packages_version"]
    for name, text in configs.items():  # the configs are the repository's, byte for byte
        if not name.endswith("metadata.json"):
            assert text == (EM / name.split("/", 1)[1]).read_bytes(), name


@pytest.mark.slow
def test_exported_em_bundle_runs_inference_from_an_empty_folder_without_the_package(em_zip, tmp_path, em_stack):
    """Unzipped into an empty folder, ``python -m monai.bundle run`` segments EM slices with a Python that cannot
    import the installed pyconv_monai: the bundle's own copy of the code runs."""
    import tifffile

    python = _isolated_python(tmp_path)
    probe = subprocess.run([str(python), "-c", "import pyconv_monai"], cwd=tmp_path, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'pyconv_monai'" in probe.stderr
    folder = tmp_path / "unzipped"
    folder.mkdir()
    with zipfile.ZipFile(em_zip) as zf:
        zf.extractall(folder)
    bundle = folder / "neuron_em_segmentation"
    data = tmp_path / "em"
    data.mkdir()
    tifffile.imwrite(data / "stack.tif", em_stack[0][:2], photometric="minisblack")
    out = tmp_path / "out"
    done = subprocess.run(
        [str(python), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--dataset_dir",
         str(data), "--output_dir", str(out), "--progress", "false"],
        cwd=bundle, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert f"loaded weights from {bundle / 'models' / 'model.pt'}" in done.stdout + done.stderr
    with open(out / "volumes.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok"], rows
    mask = tifffile.imread(out / "stack_seg.tif") > 0
    label = em_stack[1][:2] > 0
    dice = 2 * (mask & label).sum() / (mask.sum() + label.sum())
    assert dice > 0.85, dice  # the shipped weights segment cell interiors, from the zip alone


@pytest.mark.slow
def test_files_over_the_limit_go_to_large_files_yml_not_into_the_zip(tmp_path):
    out = tmp_path / "out"
    target = export_bundle(EM, out, max_file_mb=5.0)  # model.pt and model.ts are 6.1 MB
    with zipfile.ZipFile(target) as zf:
        names = set(zf.namelist())
        text = zf.read("neuron_em_segmentation/large_files.yml").decode()
    assert not {"neuron_em_segmentation/models/model.pt", "neuron_em_segmentation/models/model.ts"} & names
    paths = re.findall(r'- path: "([^"]+)"', text)
    hashes = re.findall(r'hash_val: "([0-9a-f]{64})"', text)
    assert sorted(paths) == ["models/model.pt", "models/model.ts"] and len(hashes) == 2
    assert text.count('hash_type: "sha256"') == 2 and text.count("PLACEHOLDER") == 2
    sha = dict(zip(paths, hashes))
    import torch

    # the listed model.pt is the shipped weights (mapped to the CPU where they were saved on a GPU)
    (tmp_path / "cpu").mkdir()
    cpu = tmp_path / "cpu" / "model.pt"
    torch.save(torch.load(EM / "models" / "model.pt", map_location="cpu", weights_only=True), cpu)
    shipped = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (EM / "models" / "model.pt", cpu)}
    assert sha["models/model.pt"] in shipped
    assert sorted(p.name for p in out.iterdir()) == [target.name]  # no temporary file left
