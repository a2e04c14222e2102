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
    # A speed-only leaf under the engine: torch's convolution, nothing of canlib.
    "conv_weight_grad": {
        "model",
        "losses",
        "engine",
        "evaluate",
        "datasets",
        "config",
        "trunk",
        "notebook",
        "viz",
    },
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
        "cache",
    },
}


def module_files(module: str) -> list[Path]:
    """The files of a canlib module, wherever it lives: canlib/x.py, canlib/*/x.py or a
    subpackage canlib/x/."""
    package = PACKAGE / module
    if package.is_dir():
        return sorted(package.glob("*.py"))
    found = [PACKAGE / f"{module}.py", *PACKAGE.glob(f"*/{module}.py")]
    return [path for path in found if path.exists()]


def leaf(dotted: str) -> str:
    """canlib.data.sampling -> sampling; canlib.synthetic.render -> synthetic."""
    parts = dotted.split(".")[1:]
    return parts[0] if parts[0] not in SUBPACKAGES else parts[-1]


SUBPACKAGES = {"data", "repro"}  # plain folders; canlib.synthetic is one module, split in three


def canlib_imports(module: str) -> set[str]:
    found = set()
    for path in module_files(module):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "canlib" or node.module.removeprefix("canlib.") in SUBPACKAGES:
                    found |= {alias.name for alias in node.names}
                elif node.module.startswith("canlib."):
                    found.add(leaf(node.module))
            elif isinstance(node, ast.Import):
                found |= {leaf(a.name) for a in node.names if a.name.startswith("canlib.")}
    return found - {module}


def test_every_module_named_here_exists():
    for module in FORBIDDEN:
        assert module_files(module), module


def test_the_science_sits_at_the_top_and_the_glue_in_subpackages():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert {"model", "losses", "evaluate"} <= top
    assert not top & {"experiments", "results", "notebook", "reproduce", "viz", "sampling"}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_never_imports_downstream_code(module):
    assert not canlib_imports(module) & FORBIDDEN[module]


def test_the_checker_sees_imports_inside_functions():
    # trunk imports the engine inside ensure_trunk (the engine imports trunk at its top), and
    # config at its own top: both kinds count.
    assert {"engine", "config"} <= canlib_imports("trunk")


def test_the_shared_rules_are_a_leaf():
    # canlib.rules holds the names and the junk pid that several layers check; datasets and
    # evaluate (which must not import each other) and config (which must not import torch)
    # read it, so it imports nothing from canlib but the errors.
    assert canlib_imports("rules") <= {"errors"}
