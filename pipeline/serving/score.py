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
The user part runs once per request (with its first good row's user features), the item part
once on all its candidates. Output: one JSON line per candidate, in input order: request_id,
item_id and each exported score (ctr, l2r; cvr, ctcvr with ESMM). A bad row (not JSON, not an
object, no request_id, a value of the wrong type, NaN or infinite, an id outside its vocabulary,
e.g. seq_type 99) costs that row only: its line is request_id, item_id, row (its line or row in
the file) and error, the same is said on stderr, and the command exits 1 once every good row is
scored.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np

from features.contract import Contract
from pipeline.dispatch import command_parser
from pipeline.serving.export import ITEM_FEATURES, REPRESENTATION, USER_FEATURES, load_part

SEQUENCE = ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags",
            "seq_type", "seq_scene", "seq_time_bucket")


class RequestError(ValueError):
    """A request row that cannot be scored; the message names the file, row and field."""


def read_requests(path) -> tuple[list, list[int]]:
    """(rows, their row numbers in the file) of a .jsonl or .parquet request file (Parquet through
    tensorflow-io). A JSON line that cannot be read comes as a RequestError in place of its row."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows, numbers = [], []
        with open(path, "rb") as f:
            for number, data in enumerate(f, 1):
                if not data.strip():
                    continue
                try:
                    row = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    row = RequestError(f"{path} row {number}: not JSON text: {err}")
                rows.append(row)
                numbers.append(number)
        return rows, numbers
    if path.suffix == ".parquet":
        import tensorflow_io as tfio
        rows = []
        for record in tfio.IODataset.from_parquet(str(path)):
            rows.append({(k.decode() if isinstance(k, bytes) else k): _python(v.numpy())
                         for k, v in record.items()})
        return rows, list(range(1, len(rows) + 1))
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
        values = np.asarray([_cast_nested(v, cast) for v in items], dtype=dtype).reshape(spec.shape)
        if spec.vocab and ((values < 0) | (values >= spec.vocab)).any():
            # an XLA export would clamp it into another class, the portable one fail the batch
            bad = values[(values < 0) | (values >= spec.vocab)].ravel()[0]
            raise ValueError(f"{bad} is outside its vocabulary 0..{spec.vocab - 1}")
        return values
    except (TypeError, ValueError, AttributeError) as err:
        raise RequestError(f"{where}: field {name}: {err}") from None


def _cast_nested(value, cast):
    return [_finite(cast, v) for v in value] if isinstance(value, list) else _finite(cast, value)


def _finite(cast, value):
    """cast(value); NaN and infinities are refused (a NaN ranking feature gave a NaN score)."""
    out = cast(value)
    if any(isinstance(v, float) and not math.isfinite(v) for v in (value, out)):
        raise ValueError(f"{value!r} is not a finite number")
    return out


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


def row_values(row, contract: Contract, where: str) -> dict[str, np.ndarray]:
    """Every user and item feature of one request row; RequestError naming the first bad field."""
    if isinstance(row, RequestError):
        raise row
    if not isinstance(row, dict):
        raise RequestError(f"{where}: expected an object of fields, got {type(row).__name__}")
    if row.get("request_id") in (None, ""):
        raise RequestError(f"{where}: field request_id is missing")
    return {name: feature_value(row.get(name), name, contract, where)
            for name in USER_FEATURES + ITEM_FEATURES}


def score_requests(export_dir, rows: list, where: str = "request", numbers=None) -> list[dict]:
    """Scores every good candidate row; returns one dict per row in input order: {request_id,
    item_id, <head>: score}, or for a bad row {request_id, item_id, row, error}.

    Args:
      rows: request rows (dicts; a RequestError stands for a row that could not be read).
      where, numbers: the file and each row's number in it, for the errors (default 1, 2, ...).
    """
    contract, info = export_contract(export_dir)
    # The version export.json names: the parts of one export, even after an older model's.
    version = info.get("version")
    user, item = load_part(export_dir, "user", version), load_part(export_dir, "item", version)
    numbers = list(numbers or range(1, len(rows) + 1))
    results: list[dict | None] = [None] * len(rows)
    groups: dict[str, list[int]] = {}
    values = {}
    for i, row in enumerate(rows):
        try:
            values[i] = row_values(row, contract, f"{where} row {numbers[i]}")
        except RequestError as err:
            named = row if isinstance(row, dict) else {}
            results[i] = {"request_id": str(named.get("request_id", "")),
                          "item_id": str(named.get("item_id", "")), "row": numbers[i],
                          "error": str(err)}
            continue
        groups.setdefault(str(row["request_id"]), []).append(i)
    for request_id, indices in groups.items():
        user_inputs = {n: values[indices[0]][n][None] for n in USER_FEATURES}
        representation = user(**user_inputs)[REPRESENTATION]
        candidates = {n: np.stack([values[i][n] for i in indices]) for n in ITEM_FEATURES}
        scores = {k: v.numpy() for k, v in item(**{REPRESENTATION: representation},
                                                **candidates).items()}
        for position, i in enumerate(indices):
            results[i] = {"request_id": request_id, "item_id": str(rows[i].get("item_id", "")),
                          **{h: float(scores[h][position]) for h in info["heads"]}}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("dupn score", __doc__)
    parser.add_argument("--model", required=True, help="export folder (dupn export --out)")
    parser.add_argument("--request", required=True, help="request rows: .jsonl or .parquet")
    parser.add_argument("--out", help="JSON Lines of scores (default: standard output)")
    args = parser.parse_args(argv)
    try:
        if not (Path(args.model) / "export.json").exists():
            raise FileNotFoundError(f"{args.model}: not an export folder (no export.json; "
                                    "run dupn export)")
        rows, numbers = read_requests(args.request)
        results = score_requests(args.model, rows, where=args.request, numbers=numbers)
    except (FileNotFoundError, RequestError) as err:
        print(f"dupn score: {err}", file=sys.stderr)
        return 1
    errors = [r["error"] for r in results if "error" in r]
    for error in errors:
        print(f"dupn score: {error}", file=sys.stderr)
    lines = "".join(json.dumps(r) + "\n" for r in results)
    if args.out:
        Path(args.out).write_text(lines)
        print(f"dupn score: {len(results) - len(errors)} candidates scored, {len(errors)} rejected "
              f"-> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(lines)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
