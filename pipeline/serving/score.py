"""`dupn score`: scores candidates for requests with an exported model's user and item parts.

    dupn score --model EXPORT_DIR --request FILE.jsonl|FILE.parquet [--out FILE.jsonl]

A request file has one row per candidate: request_id, the user's features (repeated on each of
the request's rows; the first row's are used) and the candidate's, under the contract's names:
  user:      seq_item_id, seq_shop_id, seq_brand_id, seq_category_id, seq_type, seq_scene,
             seq_time_bucket (lists, oldest first), seq_tags (one list of tags per behaviour),
             query (terms), age_bucket, gender
  candidate: item_id, shop_id, brand_id, category_id, tags (list), rank_features (list of floats)
Missing features are padding. In JSON Lines a list is a JSON list or a string; in Parquet every
list is a string (tensorflow-io reads scalar columns only). In a string, list items are separated
by ';' (query terms also by spaces) and, in seq_tags, one behaviour's tags by '|'.
The user part runs once per request, the item part once on all its candidates. Output: one JSON
line per candidate: request_id, item_id and each exported score (ctr, l2r; cvr, ctcvr with ESMM).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np

from features.contract import Contract
from pipeline.serving.export import ITEM_FEATURES, REPRESENTATION, USER_FEATURES, load_part

SEQUENCE = ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags",
            "seq_type", "seq_scene", "seq_time_bucket")


class RequestError(ValueError):
    """A request row that cannot be scored; the message names the file, row and field."""


def read_requests(path) -> list[dict]:
    """Rows of a .jsonl or .parquet request file as dicts (Parquet through tensorflow-io)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise RequestError(f"{path}: row {number}: not JSON: {err}") from None
        return rows
    if path.suffix == ".parquet":
        import tensorflow_io as tfio
        rows = []
        for record in tfio.IODataset.from_parquet(str(path)):
            rows.append({(k.decode() if isinstance(k, bytes) else k): _python(v.numpy())
                         for k, v in record.items()})
        return rows
    raise RequestError(f"{path}: expected a .jsonl or .parquet file")


def _python(value):
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def _items(value, name: str) -> list:
    """A list field's items: a list as given, a string split on ';' (and spaces for the query)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.replace(" ", ";") if name == "query" else value
        return [v for v in text.split(";") if v != ""]
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return [value]


def feature_value(value, name: str, contract: Contract, where: str) -> np.ndarray:
    """One row's value of a feature, padded (or cut) to the contract's shape and dtype."""
    spec = contract.features[name]
    cast = {"string": str, "int64": int, "float32": float}[spec.dtype]
    dtype = {"string": object, "int64": np.int64, "float32": np.float32}[spec.dtype]
    try:
        if not spec.shape:
            return np.asarray(cast(spec.default.decode() if spec.dtype == "string" else spec.default)
                              if value is None or value == "" else cast(value), dtype=dtype)
        items = _items(value, name)
        if name == "seq_tags":   # one list of tags per behaviour, each padded to the tag slots
            slots = spec.shape[1]
            items = [(_items(v.replace("|", ";") if isinstance(v, str) else v, name) + [""] * slots)[:slots]
                     for v in items]
        if name in SEQUENCE:   # the most recent behaviours, oldest first, right-padded
            items = items[-spec.shape[0]:]
        elif name == "rank_features" and len(items) > spec.shape[0]:
            raise ValueError(f"{len(items)} values, the contract has {spec.shape[0]}")
        else:
            items = items[: spec.shape[0]]
        pad = [[""] * spec.shape[1]] if name == "seq_tags" else [cast(spec.default.decode()
                                                                       if spec.dtype == "string"
                                                                       else spec.default)]
        items = items + pad * (spec.shape[0] - len(items))
        if spec.dtype == "string":
            items = np.vectorize(str, otypes=[object])(np.asarray(items, dtype=object)).tolist()
        return np.asarray([_cast_nested(v, cast) for v in items], dtype=dtype).reshape(spec.shape)
    except (TypeError, ValueError, AttributeError) as err:
        raise RequestError(f"{where}: field {name}: {err}") from None


def _cast_nested(value, cast):
    return [cast(v) for v in value] if isinstance(value, list) else cast(value)


def batch(rows: list[dict], names, contract: Contract, where: str) -> dict[str, np.ndarray]:
    """name -> [len(rows), *shape] array of the rows' values."""
    out = {}
    for name in names:
        values = [feature_value(r.get(name), name, contract, f"{where} row {i + 1}")
                  for i, r in enumerate(rows)]
        out[name] = np.stack(values)
    return out


def export_contract(export_dir) -> tuple[Contract, dict]:
    """The contract's shapes (enough to pad requests) and export.json of an export."""
    info = json.loads((Path(export_dir) / "export.json").read_text())
    return Contract(**info["contract"], tables={}, property_dims={}), info


def score_requests(export_dir, rows: list[dict], where: str = "request") -> list[dict]:
    """Scores every candidate row; returns [{request_id, item_id, <head>: score}] in input order."""
    contract, info = export_contract(export_dir)
    # The version export.json names: the parts of one export, even after an older model's.
    version = info.get("version")
    user, item = load_part(export_dir, "user", version), load_part(export_dir, "item", version)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if row.get("request_id") in (None, ""):
            raise RequestError(f"{where} row {i + 1}: field request_id is missing")
        groups.setdefault(str(row["request_id"]), []).append(i)
    results: list[dict | None] = [None] * len(rows)
    for request_id, indices in groups.items():
        first = rows[indices[0]]
        user_inputs = batch([first], USER_FEATURES, contract, where)
        representation = user(**user_inputs)[REPRESENTATION]
        candidates = batch([rows[i] for i in indices], ITEM_FEATURES, contract, where)
        scores = {k: v.numpy() for k, v in item(**{REPRESENTATION: representation},
                                                **candidates).items()}
        for position, i in enumerate(indices):
            results[i] = {"request_id": request_id, "item_id": str(rows[i].get("item_id", "")),
                          **{h: float(scores[h][position]) for h in info["heads"]}}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn score", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--model", required=True, help="export folder (dupn export --out)")
    parser.add_argument("--request", required=True, help="request rows: .jsonl or .parquet")
    parser.add_argument("--out", help="JSON Lines of scores (default: standard output)")
    args = parser.parse_args(argv)
    try:
        if not (Path(args.model) / "export.json").exists():
            raise FileNotFoundError(f"{args.model}: not an export folder (no export.json; "
                                    "run dupn export)")
        results = score_requests(args.model, read_requests(args.request), where=args.request)
    except (FileNotFoundError, RequestError) as err:
        print(f"dupn score: {err}", file=sys.stderr)
        return 1
    lines = "".join(json.dumps(r) + "\n" for r in results)
    if args.out:
        Path(args.out).write_text(lines)
        print(f"dupn score: {len(results)} candidates scored -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
