"""pipeline/layout.py: the only module that spells the on-disk layout out; its day arithmetic and atomic JSON writes."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from pipeline import layout

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("dt=", "_stats", "_rejected", "manifest.json", "published", "LATEST")
# Calls whose arguments are paths (or parse them): a marker in their arguments builds a path by hand.
PATH_CALLS = {"join", "_join", "Path", "PurePath", "glob", "rglob", "list_files", "open", "exists",
              "is_dir", "with_name", "joinpath", "removeprefix", "match", "create", "mkdir"}


def _text(node) -> str:
    """The literal text of a string constant or the constant parts of an f-string, else ''."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    return ""


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def layout_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every marker literal used in a path expression: an operand of `/`, an
    argument of a path call (PATH_CALLS), or a module-level string constant (a name for a path
    part). Docstrings, help texts, messages and dict keys such as manifest["published"] are not
    path expressions and are not reported."""
    found = []

    def report(node):
        text = _text(node)
        if any(m in text for m in MARKERS):
            found.append((node.lineno, text))

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            report(node.left)
            report(node.right)
        elif isinstance(node, ast.Call) and _call_name(node) in PATH_CALLS:
            for arg in node.args:
                report(arg)
    for node in tree.body:
        if isinstance(node, ast.Assign):
            values = node.value.elts if isinstance(node.value, ast.Tuple) and all(
                isinstance(t, ast.Tuple) for t in node.targets) else [node.value]
            for value in values:
                report(value)
    return sorted(found)


def test_the_check_finds_paths_built_by_hand():
    source = ('LATEST = "LATEST"\n'
              'a = Path(work) / "published" / name\n'
              'b = join(root, task, f"dt={day}")\n'
              'c = sorted(folder.glob("dt=*.json"))\n'
              'd = p.stem.removeprefix("dt=")\n'
              'STATS, X = "_stats", 1\n')
    assert [line for line, _ in layout_literals(source)] == [1, 2, 3, 4, 5, 6]
    harmless = ('"""Writes EXAMPLES/_stats/dt=D.json."""\n'
                'parser.add_argument("--model", help="default: WORK/published/LATEST")\n'
                'record = {"status": "published", "published": True}\n'
                'done = manifest["published"]\n'
                'DONE = ("published", "refused")\n')
    assert layout_literals(harmless) == []


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "pipeline").rglob("*.py")
                                        if p != ROOT / "pipeline" / "layout.py"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_but_layout_builds_layout_paths(path):
    found = layout_literals(path.read_text())
    assert not found, f"{path.relative_to(ROOT)}: ask pipeline/layout.py instead of spelling out " + \
        ", ".join(f"line {line}: {text!r}" for line, text in found)


def test_days_between_includes_both_ends_and_crosses_months():
    assert layout.days_between("2026-10-30", "2026-11-02") == ["2026-10-30", "2026-10-31", "2026-11-01",
                                                               "2026-11-02"]
    assert layout.days_between("2026-11-01", "2026-11-01") == ["2026-11-01"]
    assert layout.days_between("2028-02-28", "2028-03-01") == ["2028-02-28", "2028-02-29", "2028-03-01"]


def test_days_between_refuses_an_end_before_the_start_naming_the_options():
    with pytest.raises(ValueError, match="end 2026-11-01 is before start 2026-11-02"):
        layout.days_between("2026-11-02", "2026-11-01")
    with pytest.raises(ValueError, match="--end 2026-11-01 is before --start 2026-11-02"):
        layout.days_between("2026-11-02", "2026-11-01", names=("--start", "--end"))
    with pytest.raises(ValueError):
        layout.days_between("2026-11-31", "2026-12-01")


def test_shift_moves_by_days_either_way():
    assert layout.shift("2026-11-30") == "2026-12-01"
    assert layout.shift("2026-12-31", 1) == "2027-01-01"
    assert layout.shift("2026-03-01", -1) == "2026-02-28"
    assert layout.shift("2026-11-12", -10) == "2026-11-02"
    assert layout.shift("2026-11-12", 0) == "2026-11-12"


def test_write_json_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import numpy as np
    path = tmp_path / "deep" / "run.json"
    layout.write_json(path, {"steps": np.int64(3), "loss": np.float32(0.5), "dir": tmp_path})
    assert path.read_text() == json.dumps({"steps": 3, "loss": 0.5, "dir": str(tmp_path)}, indent=2) + "\n"
    assert os.listdir(path.parent) == ["run.json"]

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(layout.os, "replace", crash)
    with pytest.raises(OSError):
        layout.write_json(path, {"steps": 4})
    assert layout.read_json(path) == {"steps": 3, "loss": 0.5, "dir": str(tmp_path)}   # the old content, whole


def test_read_json_and_read_manifest_of_a_missing_file(tmp_path):
    assert layout.read_json(tmp_path / "none.json", default=[]) == []
    assert layout.read_manifest(tmp_path) is None
    layout.write_manifest(tmp_path, {"dates": {}, "published": ["a"]})
    assert layout.read_manifest(tmp_path) == {"dates": {}, "published": ["a"]}
    assert (tmp_path / "manifest.json").exists()


def test_paths_on_local_disks_and_object_stores():
    assert layout.join("gs://bucket/ex", "ctr", "dt=2026-11-01") == "gs://bucket/ex/ctr/dt=2026-11-01"
    assert layout.stats_file("gs://b/ex/", "2026-11-01") == "gs://b/ex/_stats/dt=2026-11-01.json"
    assert layout.example_file("/ex", "ctr", "2026-11-01", 1, 4) == \
        "/ex/ctr/dt=2026-11-01/part-00001-of-00004.tfrecord.gz"
    assert layout.rejected_dir("", "2026-11-01") == "_rejected/dt=2026-11-01"
    assert layout.holdout_dir("/w", "2026-11-01") == Path("/w/holdout/dt=2026-11-01")
    assert layout.latest_file("/w") == Path("/w/published/LATEST")


def test_stats_days_lists_complete_days(tmp_path):
    assert layout.stats_days(tmp_path) == []
    for day in ("2026-11-02", "2026-11-01"):
        layout.write_json(layout.stats_file(tmp_path, day), {})
    assert layout.stats_days(tmp_path) == ["2026-11-01", "2026-11-02"]
