"""Helpers of the Beam job tests: hand-built raw-log files and decoded examples (no tests here)."""
import glob
import gzip
import json
import os

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from configs.loader import load_config
from features.contract import Contract
from features.tfrecord import parse_batch
from pipeline.beam import build_examples
from pipeline.rawlogs.rows import day_start

DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")
FAST = ["--config", "small", "--set", "runtime.direct_running_mode=in_memory"]

ARROW_TYPES = {
    "user_id": pa.string(), "item_id": pa.string(), "ts": pa.int64(), "type": pa.string(),
    "scene": pa.string(), "shop_id": pa.string(), "brand_id": pa.string(),
    "category_id": pa.string(), "tags": pa.list_(pa.string()), "price": pa.float64(),
    "age": pa.int64(), "gender": pa.string(), "power_level": pa.int64(),
    "request_id": pa.string(), "query": pa.string(), "position": pa.int64(),
    "features": pa.list_(pa.float64()), "click": pa.int64(), "buy": pa.int64(),
    "talent_id": pa.string(), "talent_type": pa.string(), "talent_tags": pa.list_(pa.string()),
    "followed": pa.int64(), "label": pa.int64(),
}


def contract():
    return Contract.from_config(load_config("small"))


def write_rows(raw, table, day, rows, fmt="jsonl", gz=False, name="part-00000"):
    """Writes rows (dicts) as RAW/<table>/dt=<day>/<name>.<fmt>[.gz]; returns the path."""
    folder = os.path.join(str(raw), table, f"dt={day}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.{fmt}" + (".gz" if gz else ""))
    if fmt == "parquet":
        columns = list(rows[0])
        schema = pa.schema([(c, ARROW_TYPES[c]) for c in columns])
        table_ = pa.Table.from_pylist(rows, schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table_, sink)
        data = sink.getvalue().to_pybytes()
    else:
        if fmt == "jsonl":
            text = "".join(json.dumps(r) + "\n" for r in rows)
        else:
            columns = list(rows[0])
            lines = [",".join(columns)]
            for r in rows:
                lines.append(",".join(";".join(map(str, v)) if isinstance(v, list)
                                      else "" if v is None else str(v) for v in (r[c] for c in columns)))
            text = "\n".join(lines) + "\n"
        data = text.encode()
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if gz else data)
    return path


def item(j, price=None):
    return {"item_id": f"i{j}", "shop_id": f"s{j % 3}", "brand_id": f"b{j}", "category_id": f"c{j % 2}",
            "tags": [f"t{j}", "common"], "price": price if price is not None else float(j * 10)}


def behavior(user, j, ts, type_="click", scene="search"):
    return {"user_id": user, "item_id": f"i{j}", "ts": ts, "type": type_, "scene": scene}


def impression(request, user, j, ts, click=0, buy=0, query="red shoes"):
    return {"request_id": request, "user_id": user, "ts": ts, "query": query, "item_id": f"i{j}",
            "position": j, "features": [0.5] * 8, "click": click, "buy": buy}


def small_world(raw, days=DAYS, formats=None):
    """Three users, six items, each day: behaviours, impressions, follows, shop prefs, profiles.

    formats: table -> (fmt, gz); default JSON Lines. Returns nothing; the rows are by hand:
      u1 clicks items 0..4 at 00:00, 01:00, ... 04:00; sees request r<k> at 02:30 (items 1, 2, 3;
      clicks 2, buys 3); u2 buys item 5 at 06:00 and follows talent t1 at 07:00;
      u3 only has a profile (power 7) and a shop preference at 08:00.
    """
    formats = formats or {}
    for k, day in enumerate(days):
        s = day_start(day)
        rows = {
            "items": [item(j) for j in range(6)],
            "users": [{"user_id": "u1", "age": 31, "gender": "f", "power_level": 3},
                      {"user_id": "u2", "age": None, "gender": "m", "power_level": None},
                      {"user_id": "u3", "age": 19, "gender": "u", "power_level": 7}],
            "behaviors": [behavior("u1", j, s + 3600 * j) for j in range(5)]
                         + [behavior("u2", 5, s + 6 * 3600, "buy", "promo")],
            "impressions": [impression(f"r{k}", "u1", j, s + 9000, click=int(j == 2), buy=int(j == 3))
                            for j in (1, 2, 3)],
            "follows": [{"user_id": "u2", "talent_id": "t1", "ts": s + 7 * 3600, "talent_type": "icon",
                         "talent_tags": ["style", "street"], "followed": 1}],
            "shop_prefs": [{"user_id": "u3", "shop_id": "s2", "ts": s + 8 * 3600, "label": 1}],
        }
        for table, table_rows in rows.items():
            fmt, gz = formats.get(table, ("jsonl", False))
            write_rows(raw, table, day, table_rows, fmt, gz)


def run_job(raw, out, start, end, *extra):
    return build_examples.main(["--raw", str(raw), "--out", str(out), "--start", start, "--end", end,
                                *FAST, *extra])


def read_examples(out, task, day, hash_ids=False):
    """Every example of a task and day, decoded to dicts of numpy values, in file order."""
    files = sorted(glob.glob(os.path.join(str(out), task, f"dt={day}", "part-*.tfrecord.gz")))
    records = [r for f in files for r in tf.data.TFRecordDataset(f, compression_type="GZIP").as_numpy_iterator()]
    if not records:
        return []
    batch = {k: v.numpy() for k, v in parse_batch(tf.constant(records), contract(), hash_ids=hash_ids).items()}
    return [{k: v[i] for k, v in batch.items()} for i in range(len(records))]


def text(values):
    """Decoded non-empty strings of a bytes value or array."""
    values = [values] if isinstance(values, bytes) else values.ravel()
    return [v.decode() for v in values if v]


def tree_bytes(root):
    """relative path -> bytes of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def extra_rows(raw):
    """Beside the synthetic tables: bad rows, ties in time, a hot user, a user with no history."""
    for day in DAYS:
        s = day_start(day)
        hot = [behavior("hot", j % 7, s + 60 + j // 3, "click" if j % 5 else "buy") for j in range(900)]
        ties = [behavior("tie", j, s + 500) for j in (3, 1, 2)] + [behavior("tie", 1, s + 500)]
        write_rows(raw, "behaviors", day, hot + ties, "jsonl", True, name="part-extra")
        bad = [behavior("u1", 1, s - 5), {"user_id": "u1", "item_id": "i1", "ts": "soon",
               "type": "click", "scene": "search"}, behavior("u1", 1, s + 9, "look")]
        write_rows(raw, "behaviors", day, bad, "jsonl", name="part-bad")
        write_rows(raw, "items", day, [item(j) for j in range(7)] + [item(2, price=-1.0)], "csv",
                   name="part-extra")
        write_rows(raw, "impressions", day,
                   [impression("rt", "tie", j, s + 500, click=j % 2) for j in (2, 1, 3)]
                   + [impression("rn", "nohist", 4, s + 10, buy=1)], "parquet", name="part-extra")
        write_rows(raw, "users", day, [{"user_id": "hot", "age": 40, "gender": "m", "power_level": 2},
                                       {"user_id": "hot", "age": 41, "gender": "m", "power_level": 5},
                                       {"user_id": "nohist", "age": 200, "gender": "f",
                                        "power_level": 1}], "jsonl", name="part-extra")


# small shard counts, so that a few users spread over several groups and files
SMALL_SHARDS = ("--set", "data.shards_per_day=2", "--set", "data.max_bad_share=0.5",
                "--set", "data.user_shards=3", "--set", "data.item_shards=2")


def mixed_world(root, users: int, seed: int):
    """Synthetic logs of DAYS plus extra_rows (bad rows, ties, a hot user, a user with no history)."""
    from pipeline.rawlogs import synth
    assert synth.main(["--out", str(root), "--start", DAYS[0], "--days", "3", "--users", str(users),
                       "--seed", str(seed)]) == 0
    extra_rows(root)
    return root


def assert_same_outputs(expected_root, actual_root, ctr_samples: int) -> None:
    """Both example roots hold the same files, byte for byte, with dead letters and bad rows
    counted on the last day of DAYS and at least `ctr_samples` CTR samples there."""
    expected, actual = tree_bytes(expected_root), tree_bytes(actual_root)
    assert sorted(expected) == sorted(actual)
    assert any(name.startswith("_rejected") for name in expected)
    stats = json.loads(expected[f"_stats/dt={DAYS[2]}.json"])
    assert stats["rejected_total"] >= 3 and stats["tasks"]["ctr"]["samples"] > ctr_samples
    for name in sorted(expected):
        assert expected[name] == actual[name], name
