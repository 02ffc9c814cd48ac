"""`dupn synth`: layout and schema in every format, determinism, partitions, and the planted structure."""
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import cli
from pipeline.rawlogs import synth
from pipeline.rawlogs.synth_world import TARGET_MIX

START = "2026-11-01"
DAY_S = 86400


def day_start(date: str) -> int:
    return int(dt.datetime.combine(dt.date.fromisoformat(date), dt.time(), dt.timezone.utc).timestamp())


def _typed(value, kind: pa.DataType):
    """A CSV cell as the value its column holds (lists are ';'-joined, empty cells are null)."""
    if pa.types.is_list(kind):
        return [_typed(v, kind.value_type) for v in value.split(";")] if value else []
    if value == "":
        return None if not pa.types.is_string(kind) else ""
    if pa.types.is_integer(kind):
        return int(value)
    return float(value) if pa.types.is_floating(kind) else value


def read_table(raw: Path, table: str, fmt: str = "parquet") -> pd.DataFrame:
    """Every day of a table, parsed back from its files, with the dt folder as a column."""
    frames = []
    for path in sorted((raw / table).glob("dt=*/*")):
        if fmt == "parquet":
            frame = pq.read_table(path).to_pandas()
        elif fmt == "jsonl":
            frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines()])
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            schema = synth.SCHEMAS[table]
            for name in frame.columns:
                frame[name] = [_typed(v, schema.field(name).type) for v in frame[name]]
        frames.append(frame.assign(dt=path.parent.name.removeprefix("dt=")))
    return pd.concat(frames, ignore_index=True)


def canonical(frame: pd.DataFrame) -> list[tuple]:
    """Rows as tuples of plain values (nulls None, floats rounded) to compare formats."""
    def plain(v):
        if isinstance(v, (list, np.ndarray)):
            return tuple(plain(x) for x in v)
        if v is None or isinstance(v, float) and np.isnan(v):
            return None
        return round(float(v), 6) if isinstance(v, (float, np.floating)) else v
    return [tuple(plain(v) for v in row) for row in frame.itertuples(index=False)]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """400 users over 3 days, parquet: enough rows to see the planted structure."""
    out = tmp_path_factory.mktemp("raw")
    summary = synth.generate(out, START, days=3, users=400, seed=1, log=None)
    return out, summary


@pytest.fixture(scope="module")
def tables(raw):
    out, _ = raw
    frames = {name: read_table(out, name) for name in synth.TABLES}
    frames["oracle"] = read_table(out, "_oracle/impressions")
    items = frames["items"].drop_duplicates("item_id").set_index("item_id")
    for name in ("behaviors", "impressions"):
        frames[name]["category_id"] = frames[name]["item_id"].map(items["category_id"])
    return frames


@pytest.fixture(scope="module")
def small_in_every_format(tmp_path_factory):
    """The same 60 users over 2 days in each format."""
    written = {}
    for fmt in synth.FORMATS:
        out = tmp_path_factory.mktemp(fmt)
        synth.generate(out, START, days=2, users=60, seed=3, fmt=fmt, log=None)
        written[fmt] = out
    return written


# ---- layout, schema, formats ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_one_file_per_table_and_day_with_the_contract_columns(small_in_every_format, fmt):
    out = small_in_every_format[fmt]
    days = ["2026-11-01", "2026-11-02"]
    for table in synth.TABLES:
        assert sorted(p.name for p in (out / table).iterdir()) == [f"dt={d}" for d in days]
        for d in days:
            files = list((out / table / f"dt={d}").iterdir())
            assert [f.name for f in files] == [f"part-00000.{fmt}"]
        frame = read_table(out, table, fmt)
        assert list(frame.columns[:-1]) == synth.SCHEMAS[table].names
        assert len(frame) > 0
    oracle = sorted((out / "_oracle" / "impressions").glob("dt=*/part-00000.parquet"))
    assert [p.parent.name for p in oracle] == [f"dt={d}" for d in days]
    assert pq.read_schema(oracle[0]).names == ["request_id", "item_id", "click_prob", "blind_prob"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_text_formats_hold_the_same_rows_as_parquet(small_in_every_format, fmt):
    for table in synth.TABLES:
        expected = canonical(read_table(small_in_every_format["parquet"], table))
        assert canonical(read_table(small_in_every_format[fmt], table, fmt)) == expected, table


def test_csv_has_a_header_and_joins_lists_with_semicolons(small_in_every_format):
    path = small_in_every_format["csv"] / "impressions" / "dt=2026-11-01" / "part-00000.csv"
    header, first = path.read_text().splitlines()[:2]
    assert header == ",".join(synth.SCHEMAS["impressions"].names)
    features = first.split(",")[6].split(";")
    assert len(features) == 8 and all(float(f) == float(f) for f in features)


def test_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path):
    def files(out):
        return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    for fmt in ("jsonl", "parquet"):
        a, b, c = (tmp_path / f"{fmt}{k}" for k in range(3))
        synth.generate(a, START, days=2, users=60, seed=7, fmt=fmt, log=None)
        synth.generate(b, START, days=2, users=60, seed=7, fmt=fmt, log=None)
        synth.generate(c, START, days=2, users=60, seed=8, fmt=fmt, log=None)
        assert files(a) == files(b)
        other = files(c)
        assert other.keys() == files(a).keys()
        assert all(other[k] != v for k, v in files(a).items()
                   if "behaviors" in str(k) or "impressions" in str(k))


def test_rerun_in_another_format_leaves_one_file_per_day(tmp_path):
    synth.generate(tmp_path, START, days=1, users=20, seed=1, fmt="jsonl", log=None)
    synth.generate(tmp_path, START, days=1, users=20, seed=1, fmt="csv", log=None)
    assert sorted(p.name for p in tmp_path.glob("*/dt=*/*")) == ["part-00000.csv"] * 6


def test_main_prints_the_summary_and_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path), "--days", "1", "--users", "30",
                     "--format", "jsonl"]) == 0
    printed = capsys.readouterr().out
    for table in synth.TABLES:
        assert table in printed
    assert "rows/s" in printed and (tmp_path / "behaviors" / f"dt={START}" / "part-00000.jsonl").exists()
    for bad in (["--format", "xml"], ["--days", "0"], ["--start", "1.11.2026"]):
        with pytest.raises(SystemExit):
            synth.main(["--out", str(tmp_path), *bad])


# ---- values -----------------------------------------------------------------------------------------
def test_every_timestamp_lies_in_its_partition_day(tables):
    for name in ("behaviors", "impressions", "follows", "shop_prefs"):
        frame = tables[name]
        start = frame["dt"].map(day_start)
        assert ((frame["ts"] >= start) & (frame["ts"] < start + DAY_S)).all(), name


def test_values_are_in_their_vocabularies(tables):
    b, imp, users, items = tables["behaviors"], tables["impressions"], tables["users"], tables["items"]
    assert set(b["type"]) == {"click", "cart", "fav", "buy"}
    assert set(b["scene"]) == {"search", "recommend", "promo", "other"}
    assert set(users["gender"]) == {"m", "f", "u"}
    assert users["age"].isna().any() and users["power_level"].isna().any()
    assert set(users["power_level"].dropna().astype(int)) <= set(range(1, 8))
    for frame, label in ((imp, "click"), (imp, "buy"), (tables["follows"], "followed"),
                         (tables["shop_prefs"], "label")):
        assert set(frame[label]) == {0, 1}, label
    assert (imp["buy"] <= imp["click"]).all()
    assert imp["features"].map(len).eq(8).all() and set(imp["position"]) == set(range(1, 11))
    assert imp.groupby("request_id")["item_id"].agg(lambda s: s.is_unique).all()
    assert imp["query"].str.split().map(len).between(1, 3).all()
    assert items["tags"].map(len).between(1, 4).all() and (items["price"] > 0).all()
    assert tables["follows"]["talent_tags"].map(len).between(2, 4).all()
    for column, prefix in ((b["user_id"], "u"), (b["item_id"], "i"), (items["shop_id"], "s"),
                           (items["brand_id"], "b"), (items["category_id"], "c")):
        assert column.str.startswith(prefix).all()


def test_items_and_users_are_full_snapshots_every_day(tables):
    items, users = tables["items"], tables["users"]
    per_day = items.groupby("dt")["item_id"].agg(lambda s: (len(s), s.nunique()))
    assert len(set(per_day)) == 1 and per_day.iloc[0][0] == per_day.iloc[0][1]
    assert users.groupby("dt").size().eq(400).all()
    seen = set(tables["behaviors"]["item_id"]) | set(tables["impressions"]["item_id"])
    assert seen <= set(items["item_id"])


def test_behaviour_mix_and_volume_are_taobao_like(tables):
    b = tables["behaviors"]
    mix = b["type"].value_counts(normalize=True)
    assert abs(mix["click"] - TARGET_MIX["click"]) < 0.015
    for kind in ("cart", "fav", "buy"):
        assert abs(mix[kind] - TARGET_MIX[kind]) < 0.01, kind
    per_user_day = len(b) / (400 * 3)
    assert 8 < per_user_day < 14          # Taobao: ~101 per user over 9 days


def test_search_clicks_and_buys_are_search_behaviours(tables):
    b, imp = tables["behaviors"], tables["impressions"]
    search = b[b["scene"] == "search"]
    for label, kind in (("click", "click"), ("buy", "buy")):
        done = imp[imp[label] == 1][["user_id", "item_id", "ts"]]
        joined = done.merge(search[search["type"] == kind], on=["user_id", "item_id"],
                            suffixes=("", "_b"))
        joined = joined[(joined["ts_b"] > joined["ts"]) & (joined["ts_b"] < joined["ts"] + 3600)]
        assert len(joined.drop_duplicates(["user_id", "item_id", "ts"])) == len(done), label


# ---- planted structure --------------------------------------------------------------------------------
def _recent(samples: pd.DataFrame, behaviors: pd.DataFrame, window_s: int) -> pd.DataFrame:
    """Each sample joined with the same user's behaviours in the window_s before its ts."""
    joined = samples.merge(behaviors, on="user_id", suffixes=("", "_b"))
    age = joined["ts"] - joined["ts_b"]
    return joined[(age > 0) & (age <= window_s)]


def test_clicks_follow_the_categories_of_recent_behaviours(tables):
    imp = tables["impressions"].assign(row=lambda f: np.arange(len(f)))
    b = tables["behaviors"][["user_id", "ts", "category_id", "type"]]
    recent = _recent(imp[["row", "user_id", "ts", "category_id"]], b, DAY_S)
    same = recent[recent["category_id"] == recent["category_id_b"]]
    matched = imp["row"].isin(same["row"])
    assert 0.05 < imp["click"].mean() < 0.15
    assert imp.loc[matched, "click"].mean() > 2 * imp.loc[~matched, "click"].mean()
    # A buy in the category a few hours ago sates: fewer clicks than after mere browsing there.
    hours = same[same["ts"] - same["ts_b"] <= 6 * 3600]
    after_buy = imp["row"].isin(hours.loc[hours["type"] == "buy", "row"])
    browsed = imp["row"].isin(hours["row"]) & ~after_buy
    assert after_buy.sum() > 50
    assert imp.loc[after_buy, "click"].mean() < 0.8 * imp.loc[browsed, "click"].mean()


def test_talents_whose_tags_the_user_browsed_are_followed_more(tables):
    follows = tables["follows"].assign(row=lambda f: np.arange(len(f)))
    tags = tables["items"].drop_duplicates("item_id").set_index("item_id")["tags"]
    b = tables["behaviors"][["user_id", "ts", "item_id"]]
    recent = _recent(follows[["row", "user_id", "ts", "talent_tags"]], b, 2 * DAY_S)
    shared = [bool(set(t) & set(tags[i])) for t, i in zip(recent["talent_tags"], recent["item_id"])]
    matched = follows["row"].isin(recent.loc[shared, "row"])
    assert matched.sum() > 50 and (~matched).sum() > 50
    assert follows.loc[matched, "followed"].mean() > 1.5 * follows.loc[~matched, "followed"].mean()


def test_shops_of_past_behaviour_are_preferred(tables):
    prefs = tables["shop_prefs"].assign(row=lambda f: np.arange(len(f)))
    shop = tables["items"].drop_duplicates("item_id").set_index("item_id")["shop_id"]
    b = tables["behaviors"][["user_id", "ts", "item_id"]].assign(shop_b=lambda f: f["item_id"].map(shop))
    recent = _recent(prefs[["row", "user_id", "ts", "shop_id"]], b, 3 * DAY_S)
    matched = prefs["row"].isin(recent.loc[recent["shop_id"] == recent["shop_b"], "row"])
    assert matched.sum() > 50 and (~matched).sum() > 50
    assert prefs.loc[matched, "label"].mean() > 1.5 * prefs.loc[~matched, "label"].mean()


def test_richer_users_buy_dearer_items(tables):
    items = tables["items"][["item_id", "price", "dt"]]
    users = tables["users"].drop_duplicates("user_id")[["user_id", "power_level"]]
    buys = tables["behaviors"].query("type == 'buy'").merge(items, on=["item_id", "dt"]).merge(users)
    mean_price = buys.groupby("power_level")["price"].mean()
    low, high = mean_price[mean_price.index <= 3].mean(), mean_price[mean_price.index >= 5].mean()
    assert high > 1.4 * low
    assert np.corrcoef(buys["power_level"].dropna(), np.log(buys.dropna()["price"]))[0, 1] > 0.2


def test_oracle_covers_every_impression_and_is_calibrated(raw, tables):
    imp, oracle = tables["impressions"], tables["oracle"]
    keys = ["request_id", "item_id"]
    assert len(oracle) == len(imp) and not oracle.duplicated(keys).any()
    joined = imp.merge(oracle, on=keys + ["dt"], how="left", validate="one_to_one")
    assert joined["click_prob"].notna().all() and joined["click_prob"].between(0, 1).all()
    assert abs(joined["click_prob"].mean() - joined["click"].mean()) < 0.015
    assert raw[1]["click_rate"] == pytest.approx(imp["click"].mean())
    # The true probability ranks clicks well, but not perfectly.
    ranks = joined["click_prob"].rank()
    positives = joined["click"] == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    auc = (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    assert 0.7 < auc < 0.9
