"""features/collisions.py: the share of ids sharing an embedding row, exact and by the birthday formula."""
import numpy as np
import pytest

from configs.loader import load_config
from features.collisions import collision_report, expected_shared_share, main, shared_share
from features.contract import Contract


def test_shared_share_counts_every_id_of_a_shared_row():
    # rows 1 and 3 hold 2 and 3 ids, rows 2 and 4 one each: 5 of 7 ids share
    assert shared_share(np.array([1, 1, 2, 3, 3, 3, 4])) == pytest.approx(5 / 7)
    assert shared_share(np.arange(10)) == 0.0


def test_birthday_expectation_by_hand():
    assert expected_shared_share(1, 10) == 0.0
    assert expected_shared_share(2, 10) == pytest.approx(0.1)      # the other id hits one row in 10
    assert expected_shared_share(3, 10) == pytest.approx(1 - 0.9 ** 2)


def test_the_parsers_hash_collides_as_the_birthday_formula_says_and_qr_hardly_at_all():
    names = np.array([f"item{i}" for i in range(3000)], dtype=object)
    overrides = ["features.item_id.buckets=1009"]
    plain = collision_report(names, Contract.from_config(load_config("small", overrides)), "item_id")
    qr = collision_report(names, Contract.from_config(
        load_config("small", [*overrides, "features.item_id.embedding=qr"])), "item_id")
    assert plain["id_range"] == 1009 and qr["id_range"] == 505 * 504
    assert plain["expected"] == pytest.approx(1 - (1 - 1 / 1008) ** 2999)    # about 0.95
    assert abs(plain["shared"] - plain["expected"]) < 0.02
    assert qr["expected"] < 0.02 and qr["shared"] < 0.03


def test_main_prints_both_embeddings(capsys):
    assert main(["--items", "500", "--config", "small"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["item_id", "plain"], ["item_id", "qr"]]
    assert "20,010 rows" in lines[0] and "100,110,029 row pairs" in lines[1]
