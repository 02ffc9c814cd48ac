"""`dupn synth --items N`: the catalogue's size, and without it every world as before."""
import filecmp

import pyarrow.parquet as pq

from pipeline.rawlogs import synth
from pipeline.rawlogs.worlds import make_world

START = "2026-11-01"


def test_items_sets_the_catalogue_and_leaves_users_and_categories():
    default, larger = make_world("revisits", 60, 3), make_world("revisits", 60, 3, items=2500)
    assert default.sizes.items == 800 and larger.sizes.items == 2500
    assert len(larger.item_quality) == 2500
    assert (larger.sizes.users, larger.sizes.categories) == (default.sizes.users, default.sizes.categories)


def test_without_items_the_output_is_the_default_catalogues(tmp_path):
    # 60 users: the default catalogue is 800 items, so --items 800 is the same world, byte for byte.
    synth.generate(tmp_path / "a", START, days=1, users=60, seed=2, log=None)
    synth.generate(tmp_path / "b", START, days=1, users=60, seed=2, log=None, items=800)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert files and all(filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False) for f in files)


def test_main_writes_the_asked_catalogue(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--days", "1", "--users", "30", "--items", "1200"]) == 0
    assert "1200 items" in capsys.readouterr().out
    items = pq.read_table(next((tmp_path / "items").rglob("*.parquet")))
    assert items.num_rows == 1200
