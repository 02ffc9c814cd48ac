"""`dupn synth --world`: every world writes every valid table, deterministically, at its click rate,
with an oracle well above chance and, on `properties`, clearly above the property-blind oracle."""
import hashlib

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.evaluation import metrics
from pipeline.rawlogs import rows, synth
from pipeline.rawlogs.worlds import WORLDS

START = "2026-11-01"
USERS, DAYS = 150, 4

# sha256 of `generate(START, days=2, users=40, seed=3, fmt="jsonl")`'s six tables, written by the
# generator before worlds existed: `taobao` must stay byte-identical.
TAOBAO_JSONL_SHA256 = "7133ea3e4a19d55d2e786d4f652b4234fd4fac17cab550eea41df0ae97e0fea5"
TAOBAO_ORACLE_DAY2 = (384, 37.67732256255391)      # rows and sum of click_prob on 2026-11-02


def tables_digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "_oracle" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def read(root, table: str) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas() for p in sorted((root / table).glob("dt=*/*"))],
                     ignore_index=True)


@pytest.fixture(scope="module", params=list(WORLDS))
def world(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    summary = synth.generate(out, START, days=DAYS, users=USERS, seed=1, log=None, world=request.param)
    return request.param, out, summary


def test_taobao_is_the_default_and_byte_identical(tmp_path):
    synth.generate(tmp_path / "a", START, days=2, users=40, seed=3, fmt="jsonl", log=None)
    synth.generate(tmp_path / "b", START, days=2, users=40, seed=3, fmt="jsonl", log=None, world="taobao")
    assert tables_digest(tmp_path / "a") == tables_digest(tmp_path / "b") == TAOBAO_JSONL_SHA256
    oracle = pq.read_table(tmp_path / "a" / "_oracle" / "impressions" / "dt=2026-11-02" / "part-00000.parquet")
    assert (oracle.num_rows, sum(oracle.column("click_prob").to_pylist())) == TAOBAO_ORACLE_DAY2


def test_every_table_written_and_valid(world):
    name, out, summary = world
    for table in synth.TABLES:
        days = sorted((out / table).glob("dt=*"))
        assert len(days) == DAYS, (name, table)
        for day in days:
            start = rows.day_start(day.name.removeprefix("dt="))
            records = pq.read_table(day / "part-00000.parquet").to_pylist()
            assert records, (name, table, day.name)
            for record in records:       # a RowError fails the test, naming the reason
                rows.validate(table, record, start, rank_features=8)


def test_click_rate_in_documented_range(world):
    name, _, summary = world
    low, high = WORLDS[name].click_rate
    assert low <= summary["click_rate"] <= high, (name, summary["click_rate"])


def test_oracle_well_above_chance_and_blind_no_better(world):
    name, out, _ = world
    joined = read(out, "impressions").merge(read(out, "_oracle/impressions"), on=["request_id", "item_id"],
                                            validate="one_to_one")
    oracle = metrics.auc(joined["click"], joined["click_prob"])
    blind = metrics.auc(joined["click"], joined["blind_prob"])
    assert oracle > 0.75, (name, oracle)
    assert blind <= oracle + 0.005, (name, oracle, blind)
    if name == "properties":         # type and age are worth a clear margin there
        assert oracle - blind >= 0.025, (oracle, blind)


def test_labels_of_every_task_are_mixed(world):
    name, out, _ = world
    assert 0.05 < read(out, "follows")["followed"].mean() < 0.6, name
    assert 0.05 < read(out, "shop_prefs")["label"].mean() < 0.7, name
    assert read(out, "users")["power_level"].dropna().nunique() >= 5, name


def test_same_arguments_same_bytes(tmp_path):
    for name in WORLDS:
        if name == "taobao":
            continue        # pinned above
        for copy in ("a", "b"):
            synth.generate(tmp_path / name / copy, START, days=2, users=40, seed=2, log=None, world=name)
        assert tables_digest(tmp_path / name / "a") == tables_digest(tmp_path / name / "b"), name
        oracle = [(tmp_path / name / copy / "_oracle").rglob("*.parquet") for copy in ("a", "b")]
        assert [p.read_bytes() for p in sorted(oracle[0])] == [p.read_bytes() for p in sorted(oracle[1])]


def test_cli_world_flag(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--days", "1", "--users", "30", "--world", "properties"]) == 0
    assert "world properties" in capsys.readouterr().out
    assert "blind_prob" in pq.read_schema(next((tmp_path / "_oracle").rglob("*.parquet"))).names
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path), "--world", "nowhere"])
