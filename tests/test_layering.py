"""The package's rooms import only downwards, and never from inside a function (a hidden import dodges a cycle).

``lazy_module("pyconv_monai.x")`` (:mod:`pyconv_monai.utils.lazy`, an import deferred to first use so that start-up
pays only for what a command uses) counts as an import of ``pyconv_monai.x``: the same ranks, and only at module
level, where the dependency stays visible.

Ranks (README, Development): utils < networks, data < transforms, losses, inferers, writers, handlers, runtime <
visualize, workflows < cli. A room may import its own modules and any room of a lower rank, nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyconv_monai"
RANKS = {
    "utils": 0,
    "networks": 1,
    "data": 1,
    "transforms": 2,
    "losses": 2,
    "inferers": 2,
    "writers": 2,
    "handlers": 2,
    "runtime": 2,
    "visualize": 3,
    "workflows": 3,
    "cli": 4,
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _room(module: str) -> str | None:
    """``pyconv_monai.data.dicom`` -> ``data``; the package itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pyconv_monai" else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_lazy_module(call: ast.Call) -> bool:
    """``lazy_module("name")`` or ``<anything>.lazy_module("name")`` with a literal name."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    arg = call.args[0] if call.args else None
    return name == "lazy_module" and isinstance(arg, ast.Constant) and isinstance(arg.value, str)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import of the package in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.append((target, child.lineno, in_function))
            elif isinstance(child, ast.Call) and _is_lazy_module(child):
                found.append((child.args[0].value, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return [(m, line, f) for m, line, f in found if m == "pyconv_monai" or m.startswith("pyconv_monai.")]


def test_lazy_module_calls_count_as_imports(tmp_path):
    src = PACKAGE / "cli.py"
    found = {m for m, _, inside in _imports(src) if not inside}
    assert {"pyconv_monai.workflows", "pyconv_monai.workflows.export"} <= found


def test_every_room_has_a_rank():
    rooms = {_room(_module_name(p)) for p in MODULES} - {None}
    assert rooms <= set(RANKS), f"rooms without a rank in this test and the README: {sorted(rooms - set(RANKS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_only(path):
    room = _room(_module_name(path))
    wrong = []
    for target, line, in_function in _imports(path):
        other = _room(target)
        if in_function:
            wrong.append(f"line {line}: {target} imported inside a function")
        elif room is not None and other is not None and other != room and RANKS[other] >= RANKS[room]:
            wrong.append(f"line {line}: {room} (rank {RANKS[room]}) imports {target} (rank {RANKS[other]})")
    assert not wrong, f"{path.relative_to(PACKAGE.parent)}: " + "; ".join(wrong)
