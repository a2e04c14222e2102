"""The one-way data flow of DESIGN.md, checked on the import statements of each module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "canlib"

# module -> canlib modules it must never import (DESIGN.md's "must not" column).
FORBIDDEN = {
    "datasets": {"model", "losses", "engine", "evaluate", "notebook", "viz"},
    "synthetic": {"model", "losses", "engine", "evaluate", "notebook", "viz"},
    "sampling": {"model", "losses", "engine", "evaluate"},
    "transforms": {"model", "losses", "engine", "evaluate"},
    "model": {"losses", "engine", "evaluate", "datasets"},
    "losses": {"model", "engine", "evaluate", "datasets"},
    "evaluate": {"model", "losses", "engine", "datasets", "notebook", "viz"},
    "engine": {"notebook", "reproduce", "viz", "results", "experiments"},
    "trunk": {"notebook", "reproduce", "viz", "results", "experiments"},
    # Pure statistics on per-seed metrics: no models, no runs, no files.
    "stats": {
        "model",
        "losses",
        "engine",
        "evaluate",
        "datasets",
        "notebook",
        "viz",
        "results",
        "experiments",
        "config",
        "checkpoint",
        "loader",
        "gpu_data",
    },
}


def canlib_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "canlib":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("canlib."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("canlib.")}
    return found


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_never_imports_downstream_code(module):
    assert not canlib_imports(module) & FORBIDDEN[module]


def test_the_checker_sees_imports_inside_functions():
    # engine imports the loaders lazily, inside functions: those count too.
    assert {"loader", "sampling", "evaluate"} <= canlib_imports("engine")
