"""Exact duplicate rows: counted per table and day, one kept; a file delivered twice changes no example."""
import json
import os
import shutil

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.beam.dedup import DropDuplicateRows, drop_duplicates
from test_beam_fixtures import DAYS, run_job, small_world, tree_bytes, write_rows

TABLES = ("behaviors", "items", "users", "impressions", "follows", "shop_prefs")


def deliver_twice(raw, day):
    """Copies every table's file of `day` under a second name, the behaviours as CSV (the same rows
    in another format are the same rows)."""
    for table in TABLES:
        folder = os.path.join(str(raw), table, f"dt={day}")
        if table == "behaviors":
            with open(os.path.join(folder, "part-00000.jsonl")) as f:
                write_rows(raw, table, day, [json.loads(line) for line in f], "csv", name="part-again")
        else:
            shutil.copy(os.path.join(folder, "part-00000.jsonl"), os.path.join(folder, "part-again.jsonl"))


def examples_of(out):
    return {name: data for name, data in tree_bytes(out).items() if not name.startswith("_")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Examples of DAYS[1] built from a world, and from the same world with DAYS[1] delivered twice
    (block path and row path)."""
    root = tmp_path_factory.mktemp("dups")
    small_world(root / "raw")
    small_world(root / "twice")
    deliver_twice(root / "twice", DAYS[1])
    assert run_job(root / "raw", root / "once-out", DAYS[1], DAYS[1]) == 0
    assert run_job(root / "twice", root / "blocks", DAYS[1], DAYS[1]) == 0
    assert run_job(root / "twice", root / "rows", DAYS[1], DAYS[1], "--row-path") == 0
    return root


def stats(out, day):
    with open(os.path.join(str(out), "_stats", f"dt={day}.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("path", ["blocks", "rows"])
def test_a_file_delivered_twice_changes_no_example_and_is_counted(runs, path):
    once, twice = stats(runs / "once-out", DAYS[1]), stats(runs / path, DAYS[1])
    assert examples_of(runs / path) == examples_of(runs / "once-out")
    assert twice["examples"] == once["examples"] > 0
    assert once["duplicates"] == {}
    # every row of the day came twice; behaviours and items of the lookback day once
    assert twice["duplicates"] == once["rows"]
    assert twice["rows"] == {t: 2 * n for t, n in once["rows"].items()}
    assert twice["rejected_total"] == 0


def test_both_paths_write_the_same_bytes_and_counts(runs):
    assert tree_bytes(runs / "blocks") == tree_bytes(runs / "rows")


def items_block(rows):
    names = ("item_id", "shop_id", "brand_id", "category_id", "tags", "price", "path", "row")
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def test_of_an_item_read_again_after_a_newer_row_the_copy_read_last_stays():
    """a (file 1), b (file 2, the item changed), a again (file 3): the day's last row is a."""
    a, b = ("i1", "s1", "", "", ["t"], 1.0), ("i1", "s2", "", "", ["t"], 1.0)
    rows = [(*a, "f3", 1), (*b, "f2", 1), (*a, "f1", 1), (*a, "f1", 2)]
    kept, dropped = drop_duplicates(items_block(rows))
    assert dropped == 2
    assert [(r["shop_id"], r["path"], r["row"]) for r in kept.to_pylist()] == [("s2", "f2", 1),
                                                                             ("s1", "f3", 1)]
    with beam.Pipeline() as p:
        elements = [("D", (path, row), (*values[:4], tuple(values[4]), values[5]))
                    for *values, path, row in rows]
        kept_rows, counts = p | beam.Create(elements) | DropDuplicateRows("items")
        assert_that(kept_rows | beam.Map(lambda e: (e[2][1], e[1])),
                    equal_to([("s2", ("f2", 1)), ("s1", ("f3", 1))]), label="kept")
        assert_that(counts, equal_to([("D", {"duplicates": {"items": 2}})]), label="counts")


def test_lists_that_join_alike_are_not_duplicates():
    rows = [("i1", "", "", "", ["a\x1f", "b"], None, "f", 1), ("i1", "", "", "", ["a", "\x1fb"], None, "f", 2),
            ("i1", "", "", "", [], None, "f", 3), ("i1", "", "", "", [""], None, "f", 4),
            ("i1", "", "", "", [], None, "f", 5)]
    kept, dropped = drop_duplicates(items_block(rows))
    assert dropped == 1 and kept.column("row").to_pylist() == [1, 2, 4, 5]
