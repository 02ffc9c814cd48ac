"""A bad byte or a broken line costs its own row only, with its line number, on both Beam paths."""
import gzip
import json

import pytest

from pipeline.beam import block_read, blocks
from pipeline.beam.read import DEAD, VALID, read_file
from pipeline.rawlogs.rows import MAX_TEXT_CHARS, day_start

DAY = "2026-11-02"
S = day_start(DAY)


def behavior_line(user, fmt):
    if fmt == "csv":
        return f"{user},i1,{S + 5},click,search\n".encode()
    return (json.dumps({"user_id": user, "item_id": "i1", "ts": S + 5, "type": "click",
                        "scene": "search"}) + "\n").encode()


def raw_file(tmp_path, fmt, lines, gz=False, table="behaviors"):
    """RAW/<table>/dt=DAY/part.<fmt>[.gz] holding the byte lines (CSV: after its header)."""
    folder = tmp_path / table / f"dt={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    data = (b"user_id,item_id,ts,type,scene\n" if fmt == "csv" else b"") + b"".join(lines)
    path = folder / (f"part.{fmt}" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return str(path)


def row_path(path, table="behaviors"):
    """(valid rows' first ids, [(row, reason, detail)], counts) as the row path reads the file."""
    valid, dead, counts = [], [], None
    for item in read_file(table, DAY, path, rank_features=8):
        if isinstance(item, dict):
            counts = item
        elif item[0] == VALID:
            valid.append(item[2][0])
        else:
            assert item[0] == DEAD
            letter = json.loads(item[2])
            assert letter["row"] == item[1] and letter["file"] == path
            dead.append((letter["row"], letter["reason"], letter["detail"]))
    return valid, dead, counts


def block_path(path, table="behaviors"):
    """The same as the block path (ReadBlocksFn) reads it."""
    valid, dead, counts = [], [], None
    for kind, value in block_read.ReadBlocksFn(rank_features=8).process((table, DAY, path)):
        if kind == block_read.BLOCK:
            valid += blocks.unpack(value[2]).column(0).to_pylist()
        elif kind == block_read.REJECTED:
            letter = json.loads(value[1][2])
            dead.append((letter["row"], letter["reason"], letter["detail"]))
        else:
            counts = value[1]
    return valid, dead, counts


@pytest.mark.parametrize("read", [row_path, block_path], ids=["rows", "blocks"])
@pytest.mark.parametrize("fmt,gz", [("jsonl", False), ("jsonl", True), ("csv", False)])
def test_a_non_utf8_byte_in_row_3_costs_row_3_only(tmp_path, read, fmt, gz):
    bad = behavior_line("u3", fmt).replace(b"u3", b"u\xff3")
    lines = [behavior_line("u1", fmt), behavior_line("u2", fmt), bad, behavior_line("u4", fmt),
             behavior_line("u5", fmt)]
    path = raw_file(tmp_path, fmt, lines, gz)
    valid, dead, counts = read(path)
    third = 4 if fmt == "csv" else 3          # the CSV header is line 1
    assert valid == ["u1", "u2", "u4", "u5"]
    assert [(row, reason) for row, reason, _ in dead] == [(third, "unparseable")]
    assert "not UTF-8" in dead[0][2]
    assert counts["rows"] == {"behaviors": 5}
    assert counts["rejected"] == {"unparseable": 1} and counts["unreadable_files"] == []


@pytest.mark.parametrize("read", [row_path, block_path], ids=["rows", "blocks"])
def test_a_quote_that_never_closes_costs_its_line_only(tmp_path, read):
    lines = [behavior_line("u1", "csv"), b'"u2,i1,1,click,search\n', behavior_line("u3", "csv"),
             b'"quoted\nacross lines",i1,' + f"{S + 7},buy,promo\n".encode(), behavior_line("u5", "csv")]
    valid, dead, counts = read(raw_file(tmp_path, "csv", lines))
    assert valid == ["u1", "u3", "quoted\nacross lines", "u5"]
    assert [(row, reason) for row, reason, _ in dead] == [(3, "unparseable")]
    assert "does not close" in dead[0][2]
    assert counts["rows"] == {"behaviors": 5}


@pytest.mark.parametrize("read", [row_path, block_path], ids=["rows", "blocks"])
def test_a_byte_order_mark_does_not_hide_the_csv_header(tmp_path, read):
    path = raw_file(tmp_path, "csv", [behavior_line("u1", "csv")])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + data)
    valid, dead, _ = read(path)
    assert valid == ["u1"] and dead == []


@pytest.mark.parametrize("read", [row_path, block_path], ids=["rows", "blocks"])
def test_an_id_past_the_length_bound_costs_its_row_only(tmp_path, read):
    huge = "u" * (MAX_TEXT_CHARS + 1)        # the issue saw 2 MB item ids grow a day's data 13x
    lines = [behavior_line("u1", "jsonl"), behavior_line(huge, "jsonl"), behavior_line("u3", "jsonl")]
    valid, dead, _ = read(raw_file(tmp_path, "jsonl", lines))
    assert valid == ["u1", "u3"]
    assert dead == [(2, "bad_value", f"field 'user_id': {MAX_TEXT_CHARS + 1:,} characters, more "
                                     f"than {MAX_TEXT_CHARS:,}")]
    tags = {"item_id": "i2", "tags": ["a", huge]}
    valid, dead, _ = read(raw_file(tmp_path, "jsonl", [b'{"item_id": "i1", "tags": ["a"]}\n',
                                                       (json.dumps(tags) + "\n").encode()],
                                   table="items"), "items")
    assert valid == ["i1"] and [(row, reason) for row, reason, _ in dead] == [(2, "bad_value")]


@pytest.mark.parametrize("read", [row_path, block_path], ids=["rows", "blocks"])
def test_a_nan_price_is_a_counted_bad_value_not_a_missing_price(tmp_path, read):
    lines = [b'{"item_id": "i1", "price": 2.5}\n', b'{"item_id": "i2", "price": NaN}\n',
             b'{"item_id": "i3", "price": null}\n']
    valid, dead, counts = read(raw_file(tmp_path, "jsonl", lines, table="items"), "items")
    assert valid == ["i1", "i3"]          # null stays "no price"
    assert dead == [(2, "bad_value", "field 'price': expected a finite number, got nan")]
    assert counts["rejected"] == {"bad_value": 1}


def test_a_truncated_gzip_is_still_unreadable_after_its_last_whole_row(tmp_path):
    lines = [behavior_line(f"u{j}", "jsonl") for j in range(1, 2001)]
    path = raw_file(tmp_path, "jsonl", lines, gz=True)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    valid, dead, counts = row_path(path)
    assert 0 < len(valid) < 2000
    assert dead[-1][1] == "unreadable_file" and dead[-1][0] == len(valid) + 1
    assert counts["unreadable_files"] == [path]


@pytest.mark.parametrize("read", [row_path, block_path], ids=["rows", "blocks"])
def test_a_lone_surrogate_escape_in_json_costs_its_row_only(tmp_path, read):
    # "\ud800" is valid JSON syntax but no Unicode text: it crashed both paths at the first encode
    lines = [behavior_line("u1", "jsonl"), behavior_line("u\ud800x", "jsonl"),
             behavior_line("\ud83d\ude00", "jsonl")]      # a surrogate pair is an emoji: valid
    valid, dead, counts = read(raw_file(tmp_path, "jsonl", lines))
    assert valid == ["u1", "\U0001F600"]
    assert dead == [(2, "unparseable", "not Unicode text: a \\u escape is a lone surrogate")]
    assert counts["rejected"] == {"unparseable": 1}
