"""`dupn import-taobao`: the real UserBehavior sample and a hand-made dirty CSV mapped to raw logs."""
import csv
import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import cli
from pipeline.rawlogs import taobao_import
from train_helpers import SHARED_DATA

SAMPLE = SHARED_DATA / "taobao_userbehavior_sample.csv"
SAMPLE_ROWS = 4321
STRAY_ROW = 4171          # the 2017-09-11 row of the sample (1-based line number)


def source_rows(path=SAMPLE):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def utc_day(ts) -> str:
    return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).date().isoformat()


def read_table(raw: Path, table: str, fmt: str = "jsonl") -> pd.DataFrame:
    """Every day of a table, with its dt folder as a column; lists and nulls as written."""
    frames = []
    for path in sorted((raw / table).glob(f"dt=*/*.{fmt}")):
        if fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif fmt == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pq.read_table(path).to_pandas()
        frames.append(frame.assign(dt=path.parent.name.removeprefix("dt=")))
    return pd.concat(frames, ignore_index=True)


def dead_letters(raw: Path) -> list[dict]:
    path = raw / "_rejected" / "taobao" / "part-00000.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sample_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    summary = taobao_import.import_taobao(SAMPLE, raw)
    return raw, summary


def test_every_row_read_is_written_or_rejected(sample_raw):
    raw, summary = sample_raw
    behaviors = read_table(raw, "behaviors")
    rejected = dead_letters(raw)
    assert summary["rows_read"] == len(source_rows()) == SAMPLE_ROWS
    assert summary["written"]["behaviors"] == len(behaviors) == SAMPLE_ROWS - 1
    assert summary["rejected"] == {"out_of_window": 1} and len(rejected) == 1
    assert len(behaviors) + len(rejected) == summary["rows_read"]
    assert summary["malformed_share"] == 0.0


def test_stray_2017_09_11_row_is_rejected_with_reason_and_row(sample_raw):
    raw, _ = sample_raw
    (letter,) = dead_letters(raw)
    assert letter["reason"] == "out_of_window"
    assert letter["row"] == STRAY_ROW
    assert letter["file"] == str(SAMPLE)
    assert letter["line"] == ",".join(source_rows()[STRAY_ROW - 1])
    assert utc_day(letter["line"].split(",")[4]) == "2017-09-11"
    assert "2017-09-11" in letter["detail"]


def test_behaviors_map_pv_to_click_and_keep_ids(sample_raw):
    raw, _ = sample_raw
    behaviors = read_table(raw, "behaviors")
    rows = [r for i, r in enumerate(source_rows(), start=1) if i != STRAY_ROW]
    expected = Counter({"pv": "click"}.get(r[3], r[3]) for r in rows)
    assert Counter(behaviors["type"]) == expected
    assert expected["click"] == 3925 and expected["buy"] == 77
    assert set(behaviors["scene"]) == {"other"}
    assert list(behaviors.columns[:5]) == ["user_id", "item_id", "ts", "type", "scene"]
    # ids stay strings, every source event appears once with its own timestamp
    assert Counter(zip(behaviors["user_id"], behaviors["item_id"], behaviors["ts"])) == \
        Counter((r[0], r[1], int(r[4])) for r in rows)
    assert all(isinstance(v, str) for v in behaviors["user_id"])


def test_partitions_are_utc_days_of_the_china_time_window(sample_raw):
    raw, summary = sample_raw
    behaviors = read_table(raw, "behaviors")
    assert (behaviors["ts"].map(utc_day) == behaviors["dt"]).all()
    days = [(dt.date(2017, 11, 24) + dt.timedelta(days=i)).isoformat() for i in range(10)]
    assert sorted(set(behaviors["dt"])) == summary["days"] == days
    # 2017-11-25 00:00 China time is 2017-11-24 16:00 UTC: those hours are in the window.
    early = behaviors[behaviors["dt"] == "2017-11-24"]
    assert len(early) == 52 and early["ts"].min() >= 1511539200
    assert [p.name for p in (raw / "behaviors" / "dt=2017-11-30").iterdir()] == ["part-00000.jsonl"]


def test_items_one_row_per_item_and_day_with_only_category(sample_raw):
    raw, summary = sample_raw
    items = read_table(raw, "items")
    rows = [r for i, r in enumerate(source_rows(), start=1) if i != STRAY_ROW]
    expected = {(utc_day(r[4]), r[1]): r[2] for r in rows}
    assert len(items) == summary["written"]["items"] == len(expected)
    assert dict(zip(zip(items["dt"], items["item_id"]), items["category_id"])) == expected
    assert set(items["shop_id"]) == {""} and set(items["brand_id"]) == {""}
    assert all(tags == [] for tags in items["tags"])
    assert items["price"].isna().all()
    assert summary["category_conflict"] == 0


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_every_format_holds_the_same_rows(sample_raw, tmp_path, fmt):
    raw_jsonl, _ = sample_raw
    assert taobao_import.main(["--csv", str(SAMPLE), "--out", str(tmp_path), "--format", fmt]) == 0
    for table, key in (("behaviors", ["user_id", "item_id", "ts", "type"]), ("items", ["dt", "item_id"])):
        got = read_table(tmp_path, table, fmt)
        want = read_table(raw_jsonl, table)
        if fmt == "csv":
            assert list(got.columns[:-1]) == list(taobao_import.SCHEMAS[table].names)
            want = want.astype({c: str for c in want.columns if c in ("ts",)})
        if table == "items":
            if fmt == "csv":   # an empty list is an empty string, an empty price an empty field
                assert set(got["tags"]) == {""} and set(got["price"]) == {""}
            else:
                assert [list(t) for t in got["tags"]] == [[]] * len(got) and got["price"].isna().all()
            got, want = got.drop(columns=["tags", "price"]), want.drop(columns=["tags", "price"])
        sort = lambda f: f.sort_values(key + ["dt"] if "dt" not in key else key).reset_index(drop=True)
        pd.testing.assert_frame_equal(sort(got), sort(want), check_dtype=False)
    if fmt == "parquet":
        schema = pq.read_schema(next((tmp_path / "behaviors").glob("dt=*/*.parquet")))
        assert str(schema.field("ts").type) == "int64" and str(schema.field("user_id").type) == "string"
    assert dead_letters(tmp_path) == dead_letters(raw_jsonl)   # dead letters are always JSON Lines


def test_small_chunks_give_the_same_files(sample_raw, tmp_path):
    raw, _ = sample_raw
    taobao_import.import_taobao(SAMPLE, tmp_path, chunk_rows=97)
    for table in ("behaviors", "items"):
        for path in sorted((raw / table).glob("dt=*/*.jsonl")):
            assert (tmp_path / path.relative_to(raw)).read_bytes() == path.read_bytes(), path


def test_window_is_settable(tmp_path):
    summary = taobao_import.import_taobao(SAMPLE, tmp_path, start="2017-11-27", end="2017-11-28")
    behaviors = read_table(tmp_path, "behaviors")
    lo, hi = taobao_import.window_bounds("2017-11-27", "2017-11-28", 8)
    assert (hi - lo, lo) == (2 * 86400, 1511712000)     # 2017-11-27 00:00 at UTC+8
    assert behaviors["ts"].between(lo, hi - 1).all()
    inside = sum(lo <= int(r[4]) < hi for r in source_rows())
    assert len(behaviors) == inside
    assert summary["rejected"] == {"out_of_window": SAMPLE_ROWS - inside}


def test_utc_window_rejects_early_hours_without_counting_them_as_bad(tmp_path):
    summary = taobao_import.import_taobao(SAMPLE, tmp_path, utc_offset_hours=0, max_bad_share=0.01)
    assert summary["rejected"] == {"out_of_window": 53}      # 53 / 4321 = 1.2 % > the bound
    assert summary["days"][0] == "2017-11-25"


DIRTY = [
    ("1,10,100,pv,1511600000", None),                      # row 1: valid, click
    ("1,10,100,pv,1511600000", None),                      # row 2: an exact duplicate, kept
    ("1,11,100,cart", "wrong_column_count"),               # row 3: 4 fields
    ("1,11,100,cart,1511600001,x", "wrong_column_count"),  # row 4: 6 fields
    ("", "wrong_column_count"),                            # row 5: blank line
    ("1,11,100,cart,1511600001.5", "bad_timestamp"),       # row 6
    ("1,11,100,cart,2017-11-26", "bad_timestamp"),         # row 7
    ("1,11,100,click,1511600002", "unknown_behavior_type"),  # row 8: already-mapped name
    (",11,100,fav,1511600003", "empty_id"),                # row 9: user_id
    ("1,,100,fav,1511600003", "empty_id"),                 # row 10: item_id
    ("1,11,,fav,1511600003", "empty_id"),                  # row 11: category_id
    ("2,10,200,buy,1511600004", None),                     # row 12: item 10 now in category 200
    ("2,12,300,fav,1512000000", None),                     # row 13: 2017-11-30
    ("2,10,100,pv,1512000001", None),                      # row 14: item 10 back in 100, other day
    ("2,12,300,pv,1600000000", "out_of_window"),           # row 15: 2020
    (b"3,1\xff,100,pv,1511600005", "not_utf8"),            # row 16
]


def write_dirty(path: Path) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\r\n"
                              for line, _ in DIRTY))
    return path


def test_each_malformed_case_is_rejected_with_its_reason_and_row(tmp_path):
    src = write_dirty(tmp_path / "dirty.csv")
    raw = tmp_path / "raw"
    summary = taobao_import.import_taobao(src, raw, max_bad_share=1.0)
    letters = dead_letters(raw)
    assert {d["row"]: d["reason"] for d in letters} == \
        {i: reason for i, (_, reason) in enumerate(DIRTY, start=1) if reason}
    assert all(d["file"] == str(src) for d in letters)
    by_row = {d["row"]: d for d in letters}
    assert by_row[3]["detail"] == "4 fields, expected 5" and by_row[3]["line"] == "1,11,100,cart"
    assert by_row[5]["detail"] == "1 fields, expected 5"
    assert by_row[9]["detail"] == "user_id is empty"
    assert by_row[10]["detail"] == "item_id is empty"
    assert by_row[11]["detail"] == "category_id is empty"
    assert "'click'" in by_row[8]["detail"] and "'2017-11-26'" in by_row[7]["detail"]
    assert summary["rows_read"] == len(DIRTY)
    assert summary["rejected"] == dict(sorted(Counter(r for _, r in DIRTY if r).items()))
    malformed = sum(1 for _, r in DIRTY if r and r != "out_of_window")
    assert summary["malformed_share"] == pytest.approx(malformed / len(DIRTY))
    behaviors = read_table(raw, "behaviors")
    assert len(behaviors) == summary["written"]["behaviors"] == 5
    assert len(behaviors) + len(letters) == summary["rows_read"]
    first_day = behaviors[behaviors["dt"] == "2017-11-25"]
    assert list(first_day["type"]) == ["click", "click", "buy"]     # the duplicate is kept
    items = read_table(raw, "items").set_index(["dt", "item_id"])["category_id"]
    assert items[("2017-11-25", "10")] == "200"       # the last row of the day wins
    assert items[("2017-11-30", "10")] == "100"       # another day has its own snapshot
    assert summary["category_conflict"] == 1


def test_bad_share_above_the_bound_fails_naming_file_and_row(tmp_path, capsys):
    src = write_dirty(tmp_path / "dirty.csv")
    raw = tmp_path / "raw"
    assert taobao_import.main(["--csv", str(src), "--out", str(raw), "--max-bad-share", "0.5"]) == 1
    err = capsys.readouterr().err
    assert str(src) in err and "10 of 16 rows" in err and "--max-bad-share 0.5" in err
    assert "row 3: wrong_column_count" in err
    # no table is left behind, not even half-written; the dead letters stay for diagnosis
    assert sorted(p.name for p in raw.iterdir()) == ["_rejected"]
    assert len(dead_letters(raw)) == 11
    # 10 / 16 = 0.625: a looser bound lets the same file through
    assert taobao_import.main(["--csv", str(src), "--out", str(raw), "--max-bad-share", "0.7"]) == 0


def test_no_row_in_the_window_fails(tmp_path, capsys):
    code = taobao_import.main(["--csv", str(SAMPLE), "--out", str(tmp_path),
                               "--start", "2018-01-01", "--end", "2018-01-02"])
    assert code == 1
    assert "none of its 4321 rows falls in the window 2018-01-01..2018-01-02" in capsys.readouterr().err


def test_cli_prints_summary_and_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["import-taobao", "--csv", str(SAMPLE), "--out", str(tmp_path / "raw")]) == 0
    out = capsys.readouterr().out
    assert "rows read                  4,321" in out and "out_of_window                1" in out
    assert "behaviors written          4,320" in out
    assert cli.main(["import-taobao", "--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    for bad in (["--start", "2017-12-04"], ["--start", "25.11.2017"], ["--max-bad-share", "2"],
                ["--format", "xml"]):
        with pytest.raises(SystemExit) as exit_:
            taobao_import.main(["--csv", str(SAMPLE), "--out", str(tmp_path), *bad])
        assert exit_.value.code == 2
