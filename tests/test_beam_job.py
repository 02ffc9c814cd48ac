"""The whole Beam job through `main(argv)`: end to end, reruns, the bad-share bound, real Taobao data."""
import json
import os
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from features.contract import TASK_INDEX
from features.tfrecord import read_dataset
from pipeline.rawlogs import taobao_import
from test_beam_fixtures import DAYS, behavior, contract, read_examples, run_job, small_world, text, \
    tree_bytes, write_rows
from train_helpers import SHARED_DATA

TAOBAO_CSV = str(SHARED_DATA / "taobao_userbehavior_sample.csv")
MIXED = {"behaviors": ("csv", True), "items": ("parquet", False), "users": ("csv", False),
         "impressions": ("parquet", True), "follows": ("jsonl", True), "shop_prefs": ("jsonl", False)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Three days in mixed formats, built for days 2..3 with two shards per day."""
    root = tmp_path_factory.mktemp("e2e")
    small_world(root / "raw", formats=MIXED)
    assert run_job(root / "raw", root / "out", DAYS[1], DAYS[2], "--set", "data.shards_per_day=2") == 0
    return root


def test_every_task_and_day_is_written_and_parses_back(built):
    out = built / "out"
    for day in DAYS[1:]:
        for task in ("ctr", "l2r", "talent", "power", "shop"):
            files = sorted(os.listdir(out / task / f"dt={day}"))
            assert files and all(f.startswith("part-") and f.endswith("-of-00002.tfrecord.gz") for f in files)
    assert not (out / "ctr" / f"dt={DAYS[0]}").exists()      # a lookback day gets no samples
    # .lock: the job's single-flight lock (pipeline/layout.py hold_lock), left empty and unheld
    assert sorted(os.listdir(out)) == [".lock", "_stats", "ctr", "l2r", "power", "shop", "talent"]

    ds = read_dataset([str(out / t / f"dt={DAYS[2]}" / "part-*.tfrecord.gz") for t in ("ctr", "l2r")],
                      contract(), batch_size=64)
    inputs, labels = next(iter(ds))
    tasks = labels["task"].numpy().tolist()
    assert sorted(tasks) == [TASK_INDEX["ctr"]] * 3 + [TASK_INDEX["l2r"]] * 3
    n = contract().sequence_length
    assert inputs["seq_item_id"].shape == (6, n) and inputs["seq_tags"].shape == (6, n, 4)
    assert int(inputs["seq_item_id"].numpy().min()) == 0                   # hashed, padded with 0


def test_labels_sequences_and_profiles_are_the_hand_built_ones(built):
    day = DAYS[2]
    ctr = {text(e["item_id"])[0]: e for e in read_examples(built / "out", "ctr", day)}
    l2r = {text(e["item_id"])[0]: e for e in read_examples(built / "out", "l2r", day)}
    assert {k: float(e["label"]) for k, e in ctr.items()} == {"i1": 0.0, "i2": 1.0, "i3": 0.0}
    assert {k: float(e["label_buy"]) for k, e in ctr.items()} == {"i1": 0.0, "i2": 0.0, "i3": 1.0}
    assert {k: (float(e["label"]), float(e["weight"])) for k, e in l2r.items()} == {
        "i1": (0.0, 1.0), "i2": (1.0, 1.0), "i3": (1.0, 5.0)}
    # the request at 02:30 sees u1's last days (lookback 3 reaches day 1) and today's 00:00..02:00
    history = ["i0", "i1", "i2", "i3", "i4"] * 2 + ["i0", "i1", "i2"]
    assert text(ctr["i2"]["seq_item_id"]) == history
    assert text(ctr["i2"]["query"]) == ["red", "shoes"]
    assert np.allclose(ctr["i2"]["rank_features"], 0.5)
    assert (int(ctr["i2"]["age_bucket"]), int(ctr["i2"]["gender"])) == (4, 2)   # 31 (30..34), f
    (power_u1, power_u3) = sorted(read_examples(built / "out", "power", day),
                                  key=lambda e: text(e["user_id"]))
    assert float(power_u1["label"]) == 2.0 and float(power_u3["label"]) == 6.0
    assert len(text(power_u1["seq_item_id"])) == 15 and text(power_u3["seq_item_id"]) == []
    (talent,) = read_examples(built / "out", "talent", day)
    assert text(talent["talent_tags"]) == ["style", "street"] and text(talent["seq_item_id"]) == ["i5"] * 3
    (shop,) = read_examples(built / "out", "shop", day)
    assert text(shop["shop_id"]) == ["s2"] and float(shop["label"]) == 1.0


def test_day_statistics(built):
    stats = json.loads((built / "out" / "_stats" / f"dt={DAYS[2]}.json").read_text())
    assert stats["rows"] == {"behaviors": 6, "items": 6, "users": 3, "impressions": 3, "follows": 1,
                             "shop_prefs": 1}
    assert stats["rejected"] == {} and stats["missing_items"] == 0
    assert {t: v["samples"] for t, v in stats["tasks"].items()} == {
        "ctr": 3, "l2r": 3, "talent": 1, "power": 2, "shop": 1}
    assert stats["tasks"]["ctr"]["positive_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert stats["tasks"]["ctr"]["buys"] == 1 and "buys" not in stats["tasks"]["l2r"]
    assert stats["tasks"]["power"]["level_share"] == {"3": 0.5, "7": 0.5}
    assert stats["tasks"]["ctr"]["seq_len"] == {"13-16": 3}     # bins of 4 up to small.yaml's 40


def test_a_rerun_replaces_the_day_with_the_same_bytes_and_leaves_nothing_behind(tmp_path):
    small_world(tmp_path / "raw")
    out = tmp_path / "out"
    assert run_job(tmp_path / "raw", out, DAYS[1], DAYS[2], "--set", "data.shards_per_day=3") == 0
    # behaviour-made CTR samples too: their negatives are drawn, and must be drawn alike
    again = ("--ctr-from-behaviors", "--set", "data.shards_per_day=2")
    assert run_job(tmp_path / "raw", out, DAYS[1], DAYS[2], *again) == 0
    first = tree_bytes(out)
    assert run_job(tmp_path / "raw", out, DAYS[1], DAYS[2], *again) == 0
    assert tree_bytes(out) == first
    assert not any("of-00003" in path for path in first)              # the 3-shard files are gone
    assert not (out / "_tmp").exists()


def test_a_day_built_alone_equals_the_day_built_in_a_window(tmp_path):
    small_world(tmp_path / "raw")
    assert run_job(tmp_path / "raw", tmp_path / "window", DAYS[0], DAYS[2]) == 0
    assert run_job(tmp_path / "raw", tmp_path / "alone", DAYS[2], DAYS[2]) == 0
    window = {k: v for k, v in tree_bytes(tmp_path / "window").items() if f"dt={DAYS[2]}" in k}
    alone = tree_bytes(tmp_path / "alone")
    assert alone.pop(".lock") == b""                  # the job's lock, not a day's output
    assert window == alone


def test_too_many_bad_rows_fail_naming_the_worst_reason_and_keep_the_old_examples(tmp_path, capsys):
    small_world(tmp_path / "raw")
    out = tmp_path / "out"
    assert run_job(tmp_path / "raw", out, DAYS[2], DAYS[2]) == 0
    before = tree_bytes(out)
    from pipeline.rawlogs.rows import day_start
    bad = [behavior("u1", 1, day_start(DAYS[1]))] * 3 + [behavior("u1", 1, "noon")]
    write_rows(tmp_path / "raw", "behaviors", DAYS[2], bad, name="late")
    assert run_job(tmp_path / "raw", out, DAYS[2], DAYS[2]) == 1
    message = capsys.readouterr().err
    assert "above data.max_bad_share 1.00%" in message
    assert "worst reason: ts_outside_partition (3 rows), then bad_value (1 rows)" in message
    assert "Examples were not published" in message
    after = tree_bytes(out)
    assert {k: v for k, v in after.items() if "_rejected" not in k} == before
    dead = [json.loads(line) for line in (out / "_rejected" / f"dt={DAYS[2]}" / "part-00000.jsonl")
            .read_text().splitlines()]
    assert Counter(d["reason"] for d in dead) == {"ts_outside_partition": 3, "bad_value": 1}
    assert [d["row"] for d in dead] == [1, 2, 3, 4] and dead[0]["file"].endswith("late.jsonl")
    # a looser bound publishes the day, dead letters and statistics included
    assert run_job(tmp_path / "raw", out, DAYS[2], DAYS[2], "--max-bad-share", "0.5") == 0
    stats = json.loads((out / "_stats" / f"dt={DAYS[2]}.json").read_text())
    assert stats["rejected"] == {"bad_value": 1, "ts_outside_partition": 3}


def test_an_unreadable_file_fails_the_job(tmp_path, capsys):
    small_world(tmp_path / "raw", days=DAYS[2:])
    folder = tmp_path / "raw" / "follows" / f"dt={DAYS[2]}"
    (folder / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    assert run_job(tmp_path / "raw", tmp_path / "out", DAYS[2], DAYS[2], "--max-bad-share", "1") == 1
    assert "cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "out" / "ctr").exists()


def test_no_raw_files_is_a_clear_error(tmp_path, capsys):
    assert run_job(tmp_path / "nothing", tmp_path / "out", DAYS[0], DAYS[0]) == 2
    assert "no raw files for 2026-11-01..2026-11-01" in capsys.readouterr().err


def test_the_taobao_sample_through_the_whole_job(tmp_path):
    """Real data: import-taobao, then CTR samples made from behaviours (no impressions exist)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    assert taobao_import.main(["--csv", TAOBAO_CSV, "--out", str(raw)]) == 0
    first, last = "2017-12-02", "2017-12-03"
    assert run_job(raw, out, first, last, "--ctr-from-behaviors", "--lookback-days", "2",
                   "--set", "data.ctr_negatives=2") == 0
    assert sorted(p for p in os.listdir(out) if not p.startswith(("_", "."))) == ["ctr"]
    stats = json.loads((out / "_stats" / f"dt={last}.json").read_text())
    ctr = stats["tasks"]["ctr"]
    # one positive per behaviour of the day, two drawn negatives each
    assert ctr["samples"] == 3 * stats["rows"]["behaviors"] and ctr["positives"] == stats["rows"]["behaviors"]
    examples = read_examples(out, "ctr", last)
    by_request = {}
    for e in examples:
        by_request.setdefault(text(e["request_id"])[0], []).append(e)
    for group in by_request.values():
        positives = [e for e in group if float(e["label"]) == 1.0]
        negatives = [text(e["item_id"])[0] for e in group if float(e["label"]) == 0.0]
        assert positives and len(negatives) == 2 * len(positives)
        assert not set(negatives) & {text(p["item_id"])[0] for p in positives}
        # every example of a request sees the same history, all of it strictly earlier
        assert len({tuple(text(e["seq_item_id"])) for e in group}) == 1
        assert all(int(e["ts"]) == int(group[0]["ts"]) for e in group)
    # the real sample's users have histories: most examples carry one, many a full one
    # a positive made from a buy behaviour is bought (label_buy), every other example is not
    behaviours = pd.concat([pd.read_json(f, lines=True)
                            for f in sorted((raw / "behaviors" / f"dt={last}").glob("*.jsonl"))])
    bought = [e for e in examples if float(e["label_buy"]) == 1.0]
    assert ctr["buys"] == len(bought) == int((behaviours["type"] == "buy").sum()) > 0
    assert all(float(e["label"]) == 1.0 for e in bought)
    lengths = [len(text(e["seq_item_id"])) for e in examples]
    assert np.mean([n > 0 for n in lengths]) > 0.9 and max(lengths) == contract().sequence_length
