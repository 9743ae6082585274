# Copyright (c) pyconv-monai contributors
# Licensed under the Apache License, Version 2.0

"""The MONAI Model Zoo's own CI, run offline on the bundles as ``pyconv-monai export`` writes them.

Given a local checkout of Project-MONAI/model-zoo (its code is not part of this repository), this script

1. exports the bundles (``pyconv-monai export``, every check of :mod:`pyconv_monai.workflows.export`),
2. unzips them as ``models/<name>/`` into a temporary copy of the checkout (``ci/``, ``models/model_info.json`` and
   the format settings; not the zoo's other bundles) and commits them there as a zoo pull request would: every file
   except those ``large_files.yml`` lists (the weights, which the zoo keeps out of git),
3. runs the zoo's checks with ``--zoo-python`` (a Python with the zoo's ``requirements-dev.txt`` tools and the
   bundle's requirements; the zoo's premerge runs 3.10) and prints one row per check:

   * ``get_bundle_requirements.py`` (with ``ALLOW_MONAI_RC=true`` as premerge sets it), then
     ``pip install --dry-run --pre -r`` of its output (the resolution on that Python; ``--pip-install`` installs);
   * ``verify_bundle.py -m min`` and ``-m full`` (the schema put in place offline from ``bundles/schemas``, as the
     zoo's ``prepare_schema.py`` would download it; ``large_files.yml`` finds the weights present with their hash);
   * its unit-test runner ``ci/unit_tests/runner.py --b <name>`` on a zoo-style ``test_<name>.py`` written from
     :data:`UNIT_TEST` (train, train + evaluate, eval, infer with ``utils.check_workflow``), and
     ``torchrun ci/unit_tests/runner.py --b <name> --dist True`` on ``test_<name>_dist.py`` (:data:`DIST_TEST`,
     ``utils.export_config_and_run_mgpu_cmd``): 2 CPU processes with gloo where the zoo's runs 2 GPUs;
   * the zoo's ``isort --check``, ``black --skip-magic-trailing-comma --check`` and ``flake8`` with its settings
     (``setup.cfg``, ``pyproject.toml``) on ``models/<name>``;
   * the hooks of its ``.pre-commit-config.yaml`` (``pre-commit run --all-files``), as local hooks on the
     ``pre-commit-hooks`` console scripts installed in ``--zoo-python`` (offline: pre-commit cannot clone them);
     a fixer that changes a file fails the check, as in CI.

The unit tests use real data (``--data``, the staged data sets; the EM stack embedded in this repository), one
epoch on 2 + 1 slices. Not run: the zoo's ``pytype`` (``runtests.sh --codeformat``) and its GPU-only checks
(TensorRT).

Usage::

    python benchmarks/zoo_checks.py ../model-zoo --zoo-python /work/venvs/zoo310/bin/python --out docs/zoo_checks.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run by path: see benchmarks/__init__.py
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, markdown_table, print_and_write

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ["neuron_em_segmentation", "lung_ct_segmentation", "liver_ct_segmentation"]
BLACK = ["--skip-magic-trailing-comma"]  # runtests.sh --codeformat
# what of the zoo's checkout the checks read (its other bundles are not needed)
ZOO_FILES = ["ci", "models/model_info.json", "setup.cfg", "pyproject.toml", ".pre-commit-config.yaml", "runtests.sh"]

# per bundle: the data set (relative to --data, or to this repository for "repo:") and the images for inference
# (a glob: the first file in sorted order)
DATA = {
    "neuron_em_segmentation": ("repo:data/isbi2012_em", "repo:data/isbi2012_em/train-volume.tif"),
    "lung_ct_segmentation": ("lung_ct_2d", "lung_ct_2d/2d_images/*.tif"),
    "liver_ct_segmentation": ("liver_ct_2d", "liver_ct_2d/val/[0-9][0-9][0-9].png"),
}

_OVERRIDE = """{{
        "bundle_root": "models/{bundle}",
        "dataset_dir": {data!r},
        "epochs": 1,
        "batch_size": 2,
        "cache_rate": 0.0,
        "num_workers": 0,
        "progress": False,
        "log_images": False,
        "train_datalist": "$@split[0][:{n_train}]",
        "val_datalist": "$@split[1][:{n_val}]",
    }}"""

UNIT_TEST = """# A Model Zoo unit test for {bundle}, in the form of the zoo's
# ci/unit_tests/test_spleen_ct_segmentation.py
# (written by pyconv-monai's benchmarks/zoo_checks.py; real data, 1 epoch on 2 + 1 slices).

import os
import sys
import unittest

from monai.bundle import ConfigWorkflow
from parameterized import parameterized
from utils import check_workflow

TEST_CASE_1 = [{override}]  # train, evaluate

TEST_CASE_2 = [  # inference
    {{"bundle_root": "models/{bundle}", "dataset_dir": {image!r}, "output_dir": "models/{bundle}/eval/infer",
      "progress": False}}
]


def test_order(test_name1, test_name2):
    def get_order(name):
        if "train" in name:
            return 1
        if "eval" in name:
            return 2
        if "infer" in name:
            return 3
        return 4

    return get_order(test_name1) - get_order(test_name2)


def _workflow(workflow_type, configs, override):
    bundle_root = override["bundle_root"]
    sys.path.append(bundle_root)  # the bundle's own code, as the zoo's test_lung_nodule_ct_detection.py does
    files = [os.path.join(bundle_root, "configs", c) for c in configs]
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=files if len(files) > 1 else files[0],
        logging_file=os.path.join(bundle_root, "configs/logging.conf"),
        meta_file=os.path.join(bundle_root, "configs/metadata.json"),
        **override,
    )


class TestBundle(unittest.TestCase):
    @parameterized.expand([TEST_CASE_1])
    def test_train_eval_config(self, override):
        check_workflow(_workflow("train", ["train.json"], override), check_properties=True)
        # override train.json, thus set the workflow to "train" rather than "eval"
        check_workflow(_workflow("train", ["train.json", "evaluate.json"], override), check_properties=True)

    @parameterized.expand([TEST_CASE_1])
    def test_eval_config(self, override):
        check_workflow(_workflow("eval", ["train.json", "evaluate.json"], override), check_properties=True)

    @parameterized.expand([TEST_CASE_2])
    def test_infer_config(self, override):
        check_workflow(_workflow("infer", ["inference.json"], override), check_properties=True)


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
"""

DIST_TEST = """# A Model Zoo multi-GPU unit test for {bundle}, in the form of the zoo's
# ci/unit_tests/test_spleen_ct_segmentation_dist.py (written by pyconv-monai's benchmarks/zoo_checks.py): 2 processes;
# on CPUs (no CUDA device) the bundle's configs join a gloo group, on GPUs NCCL.

import os
import sys
import unittest

import torch
from parameterized import parameterized
from utils import export_config_and_run_mgpu_cmd

TEST_CASE_1 = [{override}]  # mgpu train


class TestBundleMGPU(unittest.TestCase):
    @parameterized.expand([TEST_CASE_1])
    def test_train_mgpu_config(self, override):
        bundle_root = override["bundle_root"]
        sys.path.append(bundle_root)  # the bundle's own code, for the check_config=True build in this process
        train_file = os.path.join(bundle_root, "configs/train.json")
        mgpu_train_file = os.path.join(bundle_root, "configs/multi_gpu_train.json")
        output_path = os.path.join(bundle_root, "configs/train_override.json")
        n_gpu = torch.cuda.device_count() or 2  # 2 CPU processes (gloo) without GPUs
        export_config_and_run_mgpu_cmd(
            config_file=[train_file, mgpu_train_file],
            logging_file=os.path.join(bundle_root, "configs/logging.conf"),
            meta_file=os.path.join(bundle_root, "configs/metadata.json"),
            override_dict=override,
            output_path=output_path,
            ngpu=n_gpu,
        )

        eval_file = os.path.join(bundle_root, "configs/evaluate.json")
        mgpu_eval_file = os.path.join(bundle_root, "configs/multi_gpu_evaluate.json")
        eval_output_path = os.path.join(bundle_root, "configs/eval_override.json")
        export_config_and_run_mgpu_cmd(
            config_file=[train_file, eval_file, mgpu_eval_file],
            logging_file=os.path.join(bundle_root, "configs/logging.conf"),
            meta_file=os.path.join(bundle_root, "configs/metadata.json"),
            override_dict=override,
            output_path=eval_output_path,
            ngpu=n_gpu,
            check_config=True,
        )


if __name__ == "__main__":
    unittest.main()
"""

# the hooks of the zoo's .pre-commit-config.yaml (pre-commit-hooks v4.6.0): console script and file types, as that
# repository's .pre-commit-hooks.yaml declares them
PRE_COMMIT_HOOKS = {
    "end-of-file-fixer": ("end-of-file-fixer", "types: [text]"),
    "trailing-whitespace": ("trailing-whitespace-fixer", "types: [text]"),
    "check-yaml": ("check-yaml", "types: [yaml]"),
    "check-docstring-first": ("check-docstring-first", "types: [python]"),
    "check-executables-have-shebangs": ("check-executables-have-shebangs", "types: [text, executable]"),
    "check-toml": ("check-toml", "types: [toml]"),
    "check-case-conflict": ("check-case-conflict", ""),
    "check-added-large-files": ("check-added-large-files", ""),
    "detect-private-key": ("detect-private-key", "types: [text]"),
    "forbid-new-submodules": ("forbid-new-submodules", "types: [directory]"),
    "pretty-format-json": ("pretty-format-json", "types: [json]"),
    "mixed-line-ending": ("mixed-line-ending", "types: [text]"),
}


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 1800) -> tuple[bool, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return False, f"timed out after {e.timeout:.0f} s", time.perf_counter() - start
    return done.returncode == 0, (done.stdout + done.stderr).strip(), time.perf_counter() - start


def _summary(ok: bool, text: str, lines: int = 2) -> str:
    if ok:
        return "pass"
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return "FAIL: " + " / ".join(tail)[:300].replace("|", "\\|")


def _copy_zoo(zoo: Path, target: Path) -> None:
    for rel in ZOO_FILES:
        src = zoo / rel
        if src.is_dir():
            shutil.copytree(src, target / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)
        else:
            raise FileNotFoundError(f"{src} not found: is {zoo} a checkout of Project-MONAI/model-zoo?")


def _large_files(bundle_dir: Path) -> list[str]:
    text = (bundle_dir / "large_files.yml").read_text() if (bundle_dir / "large_files.yml").is_file() else ""
    return [line.split('"')[1] for line in text.splitlines() if line.strip().startswith("- path:")]


def _git(zoo: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="zoo", GIT_AUTHOR_EMAIL="zoo@localhost")
    env.update(GIT_COMMITTER_NAME="zoo", GIT_COMMITTER_EMAIL="zoo@localhost")
    subprocess.run(["git", *args], cwd=zoo, env=env, check=True, capture_output=True)


def _pre_commit_config(zoo: Path, python: str) -> str:
    """The zoo's hooks with their ``args`` / ``exclude`` as local hooks running the installed console scripts
    (the zoo's config read by ``python``, which has PyYAML as pre-commit needs it)."""
    read = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    done = subprocess.run([python, "-c", read, str(zoo / ".pre-commit-config.yaml")], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{python} could not read {zoo / '.pre-commit-config.yaml'}: {done.stderr[-500:]}")
    config = json.loads(done.stdout)
    lines = [f"exclude: {json.dumps(config.get('exclude', '^$'))}", "repos:", "  - repo: local", "    hooks:"]
    for repo in config["repos"]:
        for hook in repo["hooks"]:
            entry, types = PRE_COMMIT_HOOKS[hook["id"]]
            lines += [f"      - id: {hook['id']}", f"        name: {hook['id']}", f"        entry: {entry}"]
            lines += ["        language: system"]
            if types:
                lines.append(f"        {types}")
            if hook.get("args"):
                lines.append(f"        args: {json.dumps(hook['args'])}")
            if hook.get("exclude"):
                lines.append(f"        exclude: {json.dumps(hook['exclude'])}")
    return "\n".join(lines) + "\n"


def _data(spec: str, data: Path) -> str:
    root, rel = (REPO, spec[5:]) if spec.startswith("repo:") else (data, spec)
    if "*" in rel or "[" in rel:
        found = sorted(root.glob(rel))
        if not found:
            raise FileNotFoundError(f"no file matches {root / rel}")
        return str(found[0])
    return str(root / rel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("zoo", type=Path, help="a local checkout of Project-MONAI/model-zoo")
    parser.add_argument("--zoo-python", default=sys.executable, help="the Python the zoo's checks run with")
    parser.add_argument("--bundles", nargs="+", default=BUNDLES, choices=BUNDLES)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the staged data sets")
    parser.add_argument("--source", type=Path, default=REPO, help="the pyconv-monai tree to export from")
    parser.add_argument("--weights-url", default=None, help="passed to pyconv-monai export")
    parser.add_argument("--pip-install", action="store_true", help="really install the requirements (not --dry-run)")
    parser.add_argument("--skip", nargs="*", default=[], help="check names to skip (e.g. dist)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary zoo copy (its path is printed)")
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args(argv)

    zoo_python = str(Path(args.zoo_python).absolute())
    tmp = Path(tempfile.mkdtemp(prefix="zoo_checks_"))
    zoo = tmp / "model-zoo"
    _copy_zoo(args.zoo.resolve(), zoo)
    env = dict(os.environ, ALLOW_MONAI_RC="true", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PATH"] = os.pathsep.join([str(Path(zoo_python).parent), env.get("PATH", "")])  # torchrun, pre-commit
    env.pop("PYTHONPATH", None)  # the bundle's own pyconv_monai copy, never an installed or checkout one
    export_env = dict(os.environ, PYTHONPATH=str(args.source.resolve()))
    rows: list[list[str]] = []

    def record(bundle: str, check: str, ok: bool, text: str, seconds: float) -> None:
        rows.append([bundle, check, _summary(ok, text), f"{seconds:.0f}"])
        print(f"{bundle}: {check}: {rows[-1][2]} ({seconds:.0f} s)", flush=True)

    for bundle in args.bundles:
        zips = tmp / "zips" / bundle
        ok, text, sec = _run(
            [sys.executable, "-m", "pyconv_monai.cli", "export", bundle, str(zips)]
            + (["--weights-url", args.weights_url] if args.weights_url else []),
            cwd=tmp,
            env=export_env,
        )
        record(bundle, "pyconv-monai export", ok, text, sec)
        if not ok:
            continue
        with zipfile.ZipFile(next(zips.glob("*.zip"))) as zf:
            zf.extractall(zoo / "models")
    _git(zoo, "init", "-q")
    for bundle in args.bundles:  # what a pull request commits: not the files large_files.yml lists
        for rel in _large_files(zoo / "models" / bundle):
            with open(zoo / ".git" / "info" / "exclude", "a") as f:
                f.write(f"/models/{bundle}/{rel}\n")
    _git(zoo, "add", "-A")
    _git(zoo, "commit", "-q", "-m", "bundles")

    for bundle in args.bundles:
        root = zoo / "models" / bundle
        if not root.is_dir():
            continue
        meta = json.loads((root / "configs" / "metadata.json").read_text())
        schema = REPO / "bundles" / "schemas" / meta["schema"].rsplit("/", 1)[-1]
        (root / "eval").mkdir(exist_ok=True)
        shutil.copy2(schema, root / "eval" / "schema.json")  # what ci/prepare_schema.py downloads

        ok, text, sec = _run([zoo_python, "ci/get_bundle_requirements.py", "--b", bundle], zoo, env)
        requirements = text.splitlines()[0].strip() if ok and text else ""
        record(bundle, "get_bundle_requirements.py", ok and bool(requirements), text, sec)
        if requirements and "pip" not in args.skip:
            pip = [zoo_python, "-m", "pip", "install", "--pre", "-r", requirements]
            pip += [] if args.pip_install else ["--dry-run", "--quiet"]
            ok, text, sec = _run(pip, zoo, env)
            record(
                bundle, "pip install " + ("" if args.pip_install else "--dry-run ") + "-r requirements", ok, text, sec
            )
        for mode in ("min", "full"):
            ok, text, sec = _run([zoo_python, "ci/verify_bundle.py", "-b", bundle, "-m", mode], zoo, env)
            record(bundle, f"verify_bundle.py -m {mode}", ok, text, sec)

        data_dir, image = (_data(s, args.data) for s in DATA[bundle])
        unit = zoo / "ci" / "unit_tests"
        override = _OVERRIDE.format(bundle=bundle, data=data_dir, n_train=2, n_val=1)
        (unit / f"test_{bundle}.py").write_text(UNIT_TEST.format(bundle=bundle, override=override, image=image))
        if "unit" not in args.skip:
            ok, text, sec = _run([zoo_python, "ci/unit_tests/runner.py", "--b", bundle], zoo, env)
            record(bundle, "unit tests (runner.py)", ok, text, sec)
        override = _OVERRIDE.format(bundle=bundle, data=data_dir, n_train=4, n_val=2)
        (unit / f"test_{bundle}_dist.py").write_text(DIST_TEST.format(bundle=bundle, override=override))
        if "dist" not in args.skip:
            torchrun = [zoo_python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
            ok, text, sec = _run(torchrun + ["ci/unit_tests/runner.py", "--b", bundle, "--dist", "True"], zoo, env)
            record(bundle, "dist unit tests (2 gloo processes)", ok, text, sec)

        target = f"models/{bundle}"
        for check, cmd in (
            ("isort --check", [zoo_python, "-m", "isort", "--check", target]),
            ("black --skip-magic-trailing-comma --check", [zoo_python, "-m", "black", *BLACK, "--check", target]),
            ("flake8", [zoo_python, "-m", "flake8", target, "--count", "--statistics"]),
        ):
            ok, text, sec = _run(cmd, zoo, env)
            record(bundle, check, ok, text, sec)

    if "pre-commit" not in args.skip:
        # the linters on the committed tree, after the tests (their outputs are not committed: a clean copy)
        clean = tmp / "pre-commit"
        _git(zoo, "worktree", "add", "-q", str(clean), "HEAD")
        (clean / ".pre-commit-local.yaml").write_text(_pre_commit_config(zoo, zoo_python))
        cmd = [zoo_python, "-m", "pre_commit", "run", "--all-files", "--config", ".pre-commit-local.yaml"]
        ok, text, sec = _run(cmd, clean, dict(env, PRE_COMMIT_HOME=str(tmp / "pre-commit-home")))
        failed = [line for line in text.splitlines() if line.endswith("Failed")]
        record("all", "pre-commit run --all-files (zoo hooks)", ok, "\n".join(failed) or text, sec)

    zoo_version = _run([zoo_python, "-c", "import platform; print(platform.python_version())"], tmp)[1]
    table = "\n".join(markdown_table(["bundle", "check", "result", "seconds"], "lllr", rows))
    text = f"Command: `{command_line()}`\n\nZoo checks run with Python {zoo_version}.\n\n{table}"
    print_and_write(text, args.out)
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(r[2] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
