"""The layering of docs/ARCHITECTURE.md, checked on every import (function-level ones included).

A module may import its own package and those listed below it; never one above. Top-level packages:
features and configs sit at the bottom, models above them, pipeline on top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module of rank r may import packages of rank <= r.
PIPELINE_ORDER = ["layout", "dispatch", "rawlogs", "beam", "training", "evaluation", "serving",
                  "jobs", "experiments", "bench", "cli", "demo"]
TOP_ORDER = {"features": 0, "configs": 0, "models": 1, "pipeline": 2}


def unit(module: str) -> tuple[int, int] | None:
    """(top rank, pipeline rank) of a dotted module name of ours; None for third-party modules."""
    parts = module.split(".")
    if parts[0] not in TOP_ORDER:
        return None
    sub = PIPELINE_ORDER.index(parts[1]) if parts[0] == "pipeline" and len(parts) > 1 else -1
    return TOP_ORDER[parts[0]], sub


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":    # `from pipeline import layout` names a module
                found += [(node.lineno, f"pipeline.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def our_modules() -> list[Path]:
    return sorted(p for top in TOP_ORDER for p in (ROOT / top).rglob("*.py"))


def test_every_pipeline_module_belongs_to_a_layer():
    for path in (ROOT / "pipeline").rglob("*.py"):
        rel = path.relative_to(ROOT / "pipeline")
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        first = rel.parts[0].removesuffix(".py")
        assert first in PIPELINE_ORDER, f"pipeline/{rel}: not in a layer of PIPELINE_ORDER"


@pytest.mark.parametrize("path", our_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_reaches_up(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    own = unit(module)
    for line, name in imported_modules(path):
        target = unit(name)
        if target is None or target[1] == -1 and target[0] == own[0]:
            continue    # third-party, or the package's own __init__
        assert target <= own or target[0] < own[0], \
            f"{path.relative_to(ROOT)}:{line} imports {name}, which sits above it"


def test_subpackages_document_their_role():
    for init in (ROOT / "pipeline").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "imports" in doc.lower(), f"{init.relative_to(ROOT)}: say what lives here and what it imports"


def test_no_absolute_paths_of_this_machine():
    # The project is cloned anywhere: paths come from the project root (the shared data from
    # tests/train_helpers.SHARED_DATA, ../shared beside it), never from where it lies here.
    machine = "/" + "work/"
    tops = ("features", "configs", "models", "pipeline", "tests")
    found = [f"{path.relative_to(ROOT)}:{n}"
             for top in tops for path in sorted((ROOT / top).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if machine in line]
    assert found == []
