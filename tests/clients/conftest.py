"""The client programs' own venvs (MONAI Deploy App SDK, MONAI Label): each installs beside this package only in a
venv of its own, so their tests run its Python in a subprocess.

``PYCONV_DEPLOY_PYTHON`` / ``PYCONV_LABEL_PYTHON`` name that Python (default: ``.venv-deploy`` / ``.venv-label`` in
the repository, where ``.ci/run`` makes them). A missing one skips its tests, except with
``PYCONV_REQUIRE_CLIENTS=1`` (CI), where it fails them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


def client_python(env: str, venv: str, module: str) -> Path:
    """The Python of a client's venv that imports ``module``; skips (fails when required) where there is none."""
    python = Path(os.environ.get(env) or REPO / venv / "bin" / "python")
    problem = None
    if not python.is_file():
        problem = f"{python} not found (set {env} or make {venv}, see deploy/README.md)"
    else:
        done = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
        if done.returncode:
            problem = f"{python} cannot import {module}: {done.stderr.strip().splitlines()[-1:]}"
    if problem:
        if os.environ.get("PYCONV_REQUIRE_CLIENTS") == "1":
            pytest.fail(f"client venv required (PYCONV_REQUIRE_CLIENTS=1): {problem}")
        pytest.skip(problem)
    return python


def run_client(python: Path, args: list[str], cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    """``python args...`` with this worktree first on ``PYTHONPATH`` and one thread; fails with its output tail."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    return done


@pytest.fixture(scope="session")
def deploy_python() -> Path:
    module = "monai.deploy.operators.monai_bundle_inference_operator"
    return client_python("PYCONV_DEPLOY_PYTHON", ".venv-deploy", module)


@pytest.fixture(scope="session")
def label_python() -> Path:
    return client_python("PYCONV_LABEL_PYTHON", ".venv-label", "monailabel.tasks.infer.bundle")
