"""How many ids share an embedding row: exactly, through the parser's own hash, and by the birthday formula.

    python -m features.collisions --items 4200000 [--config dupn] [--table item_id]

prints, for the table as configured and as a qr table of the same buckets, the share of ids
whose row (qr: whose pair of rows) another id also has, over ids "1".."N" (the public Taobao
set's ids are such numbers), beside the expectation for a uniform hash.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from features.contract import Contract


def shared_share(rows: np.ndarray) -> float:
    """Share of the ids (one row index each, distinct ids) whose row another id also has."""
    _, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse] > 1)) if len(rows) else 0.0


def expected_shared_share(ids: int, rows: int) -> float:
    """The birthday expectation of shared_share: ids hashed uniformly into `rows` rows, the
    chance that one id's row holds any of the ids - 1 others, 1 - (1 - 1/rows)^(ids - 1)."""
    return float(-np.expm1((ids - 1) * np.log1p(-1.0 / rows)))


def hashed_ids(names, contract: Contract, table: str) -> np.ndarray:
    """The int64 ids the parser (features.tfrecord.hash_features) gives id strings of a table."""
    import tensorflow as tf

    from features.tfrecord import hash_features
    feature = next(n for n, f in contract.features.items() if f.table == table and not f.shape)
    return hash_features({feature: tf.constant(names)}, contract)[feature].numpy()


def collision_report(names, contract: Contract, table: str) -> dict:
    """{"ids", "embedding", "id_range", "shared", "expected"} of distinct id strings in a table.

    A qr id owns its (quotient, remainder) pair, so ids share a pair exactly when they share
    the hashed id; a plain id's hashed id is its row."""
    ids = hashed_ids(names, contract, table)
    id_range = contract.id_range(table)
    return {"ids": len(names), "embedding": contract.embedding(table), "id_range": id_range,
            "shared": shared_share(ids), "expected": expected_shared_share(len(names), id_range - 1)}


def main(argv: list[str] | None = None) -> int:
    from configs.loader import add_config_args, config_from_args
    parser = argparse.ArgumentParser(prog="python -m features.collisions", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, required=True, help="ids '1'..'N' to hash")
    parser.add_argument("--table", default="item_id")
    add_config_args(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    names = np.array([str(i) for i in range(1, args.items + 1)], dtype=object)
    for kind in ("plain", "qr"):
        table = getattr(config.features, args.table)
        changed = dataclasses.replace(config.features, **{args.table: dataclasses.replace(table, embedding=kind)})
        contract = Contract.from_config(dataclasses.replace(config, features=changed))
        r = collision_report(names, contract, args.table)
        slots = "rows" if kind == "plain" else "row pairs"
        print(f"{args.table} {kind:5s} {table.buckets:,} rows x {table.dim}: {r['ids']:,} ids hashed "
              f"into {r['id_range'] - 1:,} {slots}, shared {r['shared']:.4%} "
              f"(birthday {r['expected']:.4%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
