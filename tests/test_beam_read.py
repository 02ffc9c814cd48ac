"""Reading raw files into validated rows: formats, layout, and one test per rejection reason."""
import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.rawlogs import rows as beam_rows
from pipeline.beam.read import COUNTS, REJECTED, RawLayoutError, ReadTables, list_files
from pipeline.rawlogs.rows import RowError, day_start, validate
from test_beam_fixtures import behavior, impression, item, write_rows

DAY = "2026-11-02"
S = day_start(DAY)


def check(table, files, valid=None, rejected=None, counts=None):
    """Runs ReadTables in memory and asserts its outputs equal the expected lists (None: not checked).

    rejected: (reason, table, file, row, detail) of every dead letter; counts: (day, counts dict).
    """
    with beam.Pipeline() as p:
        result = p | ReadTables(files, rank_features=8)
        if valid is not None:
            assert_that(result[table], equal_to(valid), label="valid")
        if rejected is not None:
            dead = result[REJECTED] | beam.Map(lambda kv: json.loads(kv[1][2])) | beam.Map(
                lambda d: (d["reason"], d["table"], d["file"], d["row"], d["detail"]))
            assert_that(dead, equal_to(rejected), label="rejected")
        if counts is not None:
            assert_that(result[COUNTS], equal_to(counts), label="counts")


def test_reads_every_format_to_the_same_rows(tmp_path):
    rows = [behavior("u1", 1, S + 10), behavior("u2", 2, S + 20, "buy", "promo")]
    files = []
    for k, (fmt, gz) in enumerate([("jsonl", False), ("jsonl", True), ("csv", False), ("csv", True),
                                   ("parquet", False), ("parquet", True)]):
        path = write_rows(tmp_path, "behaviors", DAY, rows, fmt, gz, name=f"part-{k}")
        files.append(("behaviors", DAY, path))
    expected = [(DAY, ("u1", "i1", S + 10, 1, 1)), (DAY, ("u2", "i2", S + 20, 4, 3))]
    no_rejects = {"rows": {"behaviors": 2}, "rejected": {}, "rejected_by_table": {},
                  "unreadable_files": []}
    check("behaviors", files, valid=expected * 6, rejected=[], counts=[(DAY, no_rejects)] * 6)


def test_items_keep_file_and_row_order_and_lists_from_csv(tmp_path):
    path = write_rows(tmp_path, "items", DAY, [item(1), item(2, price=None) | {"tags": ["a", "b", "c"]}],
                      "csv")
    check("items", [("items", DAY, path)], valid=[
        (DAY, (path, 2), ("i1", "s1", "b1", "c1", ("t1", "common"), 10.0)),
        (DAY, (path, 3), ("i2", "s2", "b2", "c0", ("a", "b", "c"), 20.0))])


def test_listing_skips_underscore_and_dot_names_and_other_days(tmp_path):
    good = write_rows(tmp_path, "behaviors", DAY, [behavior("u1", 1, S)])
    write_rows(tmp_path, "behaviors", DAY, [behavior("u1", 1, S)], name="_SUCCESS")
    write_rows(tmp_path, "behaviors", DAY, [behavior("u1", 1, S)], name=".part.tmp")
    write_rows(tmp_path, "behaviors", "2026-11-03", [behavior("u1", 1, S)])
    os.makedirs(tmp_path / "behaviors" / "_temporary" / f"dt={DAY}")
    assert list_files(str(tmp_path), "behaviors", [DAY]) == [("behaviors", DAY, good)]
    assert list_files(str(tmp_path), "behaviors", ["2026-10-01"]) == []


def test_listing_refuses_an_unknown_file_format(tmp_path):
    folder = tmp_path / "users" / f"dt={DAY}"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(RawLayoutError, match=r"notes\.txt: not a raw-log file"):
        list_files(str(tmp_path), "users", [DAY])


def write_text(tmp_path, table, name, text):
    folder = tmp_path / table / f"dt={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def jsonl(*rows):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def cases():
    """reason -> (table, file name, file text, row number of the bad row, words of its detail).

    Each readable file holds one good row first, whose user_id is the reason (to find it again).
    """
    def good_b(reason):
        return behavior(reason, 1, S + 5)

    def good_i(reason):
        return impression("r1", reason, 1, S + 5)
    return {
        beam_rows.UNPARSEABLE: ("behaviors", "a.jsonl", jsonl(good_b("unparseable"), "{not json"),
                                2, "not JSON"),
        beam_rows.MISSING_FIELD: ("behaviors", "a.csv", f"user_id,item_id,ts,type,scene\n"
                                  f"missing_field,i1,{S + 5},click,search\n,i1,{S},click,search\n",
                                  3, "'user_id' is missing"),
        beam_rows.BAD_VALUE: ("behaviors", "a.jsonl", jsonl(good_b("bad_value"), behavior(
            "u1", 1, "yesterday")), 2, "'ts': expected an integer"),
        beam_rows.UNKNOWN_TYPE: ("behaviors", "a.jsonl", jsonl(good_b("unknown_type"), behavior(
            "u1", 1, S, type_="view")), 2, "'view' is not one of click"),
        beam_rows.UNKNOWN_SCENE: ("behaviors", "a.jsonl", jsonl(good_b("unknown_scene"), behavior(
            "u1", 1, S, scene="homepage")), 2, "'homepage' is not one of search"),
        beam_rows.TS_OUTSIDE_PARTITION: ("behaviors", "a.jsonl", jsonl(
            good_b("ts_outside_partition"), behavior("u1", 1, S + 86_400)), 2,
            "is not on the partition day 2026-11-02"),
        beam_rows.LABEL_OUT_OF_RANGE: ("impressions", "a.jsonl", jsonl(
            good_i("label_out_of_range"), impression("r1", "u1", 2, S, click=2)), 2,
            "'click': 2 is not 0 or 1"),
        beam_rows.BAD_FEATURES_LENGTH: ("impressions", "a.jsonl", jsonl(
            good_i("bad_features_length"), impression("r1", "u1", 2, S) | {"features": [0.1, 0.2, 0.3]}),
            2, "has 3 values"),
        beam_rows.UNREADABLE_FILE: ("behaviors", "a.jsonl.gz", b"this is not gzip", 1,
                                    "cannot read the file"),
    }


CASES = cases()


@pytest.fixture(scope="module")
def rejections(tmp_path_factory):
    """One in-memory pipeline over every case's file.

    Returns reason -> {"path", "valid": user ids of valid rows, "dead": dead letters, "counts"}.
    """
    root = tmp_path_factory.mktemp("cases")
    found = {r: {"path": write_text(root / r, table, name, text), "valid": [], "dead": [], "counts": []}
             for r, (table, name, text, _, _) in CASES.items()}
    out = root / "out"
    with beam.Pipeline() as p:
        files = [(CASES[r][0], DAY, found[r]["path"]) for r in sorted(CASES)]
        result = p | ReadTables(files, rank_features=8)
        for tag in ("behaviors", "impressions", REJECTED, COUNTS):
            _ = (result[tag] | f"Json {tag}" >> beam.Map(json.dumps)
                 | f"Write {tag}" >> beam.io.WriteToText(str(out / tag), shard_name_template=""))
    by_path = {v["path"]: r for r, v in found.items()}
    for table in ("behaviors", "impressions"):
        for line in (out / table).read_text().splitlines():
            _, row = json.loads(line)
            found[row[1] if table == "impressions" else row[0]]["valid"].append(row)
    for line in (out / REJECTED).read_text().splitlines():
        dead = json.loads(json.loads(line)[1][2])
        found[by_path[dead["file"]]]["dead"].append(dead)
    for line in (out / COUNTS).read_text().splitlines():
        _, counts = json.loads(line)
        found[next(iter(counts["rejected"]))]["counts"].append(counts)
    return found


@pytest.mark.parametrize("reason", sorted(CASES))
def test_a_bad_row_is_rejected_with_reason_file_and_row(rejections, reason):
    table, _, text, row, words = CASES[reason]
    case = rejections[reason]
    unreadable = reason == beam_rows.UNREADABLE_FILE
    assert len(case["valid"]) == (0 if unreadable else 1)     # the good row beside it is kept
    (dead,) = case["dead"]
    assert (dead["reason"], dead["table"], dead["file"], dead["row"]) == (reason, table, case["path"], row)
    assert words in dead["detail"]
    if not unreadable:
        assert dead["raw"] == text.splitlines()[row - 1]      # the row as it was read
    assert case["counts"] == [{"rows": {table: 1 if unreadable else 2}, "rejected": {reason: 1},
                               "rejected_by_table": {table: {reason: 1}},
                               "unreadable_files": [case["path"]] if unreadable else []}]


def test_power_level_out_of_range_and_unknown_gender():
    with pytest.raises(RowError) as err:
        validate("users", {"user_id": "u", "gender": "f", "power_level": 8}, S, 8)
    assert err.value.reason == beam_rows.LABEL_OUT_OF_RANGE
    with pytest.raises(RowError) as err:
        validate("users", {"user_id": "u", "gender": "x"}, S, 8)
    assert err.value.reason == beam_rows.BAD_VALUE and "'x' is not one of m, f, u" in err.value.detail


def test_csv_strings_and_json_numbers_validate_alike():
    csv_row = {"request_id": "r", "user_id": "7", "ts": str(S), "query": "", "item_id": "9",
               "position": "0", "features": "0.5;1;2;3;4;5;6;7", "click": "1", "buy": "0"}
    json_row = {"request_id": "r", "user_id": 7, "ts": float(S), "query": None, "item_id": 9,
                "position": 0, "features": [0.5, 1, 2, 3, 4, 5, 6, 7], "click": 1, "buy": 0}
    expected = ("r", "7", S, "", "9", 0, (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0), 1, 0)
    assert validate("impressions", csv_row, S, 8) == expected
    assert validate("impressions", json_row, S, 8) == expected
