"""The raw-log contract of docs/RAW_LOGS.md in code: tables, fields, Arrow types and where the oracle lives."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline import layout

_STR, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()

# Field order is the contract's: JSON Lines and Parquet name fields, CSV headers list them in it.
SCHEMAS = {
    "behaviors": pa.schema([("user_id", _STR), ("item_id", _STR), ("ts", _INT), ("type", _STR),
                            ("scene", _STR)]),
    "items": pa.schema([("item_id", _STR), ("shop_id", _STR), ("brand_id", _STR),
                        ("category_id", _STR), ("tags", pa.list_(_STR)), ("price", _FLOAT)]),
    "users": pa.schema([("user_id", _STR), ("age", _INT), ("gender", _STR), ("power_level", _INT)]),
    "impressions": pa.schema([("request_id", _STR), ("user_id", _STR), ("ts", _INT), ("query", _STR),
                              ("item_id", _STR), ("position", _INT), ("features", pa.list_(_FLOAT)),
                              ("click", _INT), ("buy", _INT)]),
    "follows": pa.schema([("user_id", _STR), ("talent_id", _STR), ("ts", _INT), ("talent_type", _STR),
                          ("talent_tags", pa.list_(_STR)), ("followed", _INT)]),
    "shop_prefs": pa.schema([("user_id", _STR), ("shop_id", _STR), ("ts", _INT), ("label", _INT)]),
}
TABLES = tuple(SCHEMAS)
FIELDS = {table: tuple(schema.names) for table, schema in SCHEMAS.items()}
# Lists are ';'-joined strings in CSV.
LIST_FIELDS = frozenset(f.name for schema in SCHEMAS.values() for f in schema if pa.types.is_list(f.type))

# The synthetic generator's true click probability of every impression, beside the tables (a
# folder starting with '_' is not a table, so the Beam job never reads it).
ORACLE = Path("_oracle") / "impressions"
ORACLE_SCHEMA = pa.schema([("request_id", _STR), ("item_id", _STR), ("click_prob", _FLOAT),
                           ("blind_prob", _FLOAT)])   # blind_prob: the property-blind oracle


def table_dir(raw, table: str, day: str) -> Path:
    """RAW/<table>/dt=D (local)."""
    return Path(layout.raw_dir(raw, table, day))


def oracle_dir(raw, day: str) -> Path:
    """RAW/_oracle/impressions/dt=D."""
    return table_dir(raw, str(ORACLE), day)

# The valid rows of rawlogs/rows.py (its tuple layouts) as Arrow blocks, for the columnar Beam job:
# vocabulary fields hold their index; items and users carry where they were read (path, row), as
# the last row of a day wins.
_INDEXED = ("type", "scene", "gender")


def _valid_schema(table: str, schema: pa.Schema) -> pa.Schema:
    fields = [pa.field(f.name, _INT) if f.name in _INDEXED else f for f in schema]
    order = [("path", _STR), ("row", _INT)] if table in ("items", "users") else []
    return pa.schema(fields + order)


VALID_SCHEMAS = {table: _valid_schema(table, schema) for table, schema in SCHEMAS.items()}
