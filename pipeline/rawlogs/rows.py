"""The raw-log row contract (docs/RAW_LOGS.md): validate one row of a table into a compact tuple.

Rows arrive as dicts from JSON Lines, CSV (every value a string, lists joined by ';') or Parquet
(typed values). A valid row becomes a plain tuple (cheap to shuffle); a bad one raises RowError
with one of REASONS and a detail naming the field. Layouts of the valid tuples:

  behaviors    (user_id, item_id, ts, type_index, scene_index)
  items        (item_id, shop_id, brand_id, category_id, tags, price)        price: float or None
  users        (user_id, age, gender_index, power_level)                    age: int or None;
                                                                             power_level 0 = none
  impressions  (request_id, user_id, ts, query, item_id, position, features, click, buy)
  follows      (user_id, talent_id, ts, talent_type, talent_tags, followed)
  shop_prefs   (user_id, shop_id, ts, label)

Lists (tags, features, talent_tags) are tuples. Ids are strings (integers are accepted and
written as strings). Timestamps are Unix seconds and must fall on the row's dt= partition day.
"""
from __future__ import annotations

import datetime as dt
import functools
import math

from features.contract import BEHAVIOR_INDEX, GENDER_INDEX, NUM_POWER_LEVELS, SCENE_INDEX
from pipeline.rawlogs.schema import TABLES

DAY_SECONDS = 86_400
# The longest string a field or list item may hold (ids, queries, tags): real ones are tens of
# characters, and an unbounded one is copied into every example that reads it.
MAX_TEXT_CHARS = 1024

# Why a row is rejected; each is counted and written with the row to EXAMPLES/_rejected/dt=D/.
UNPARSEABLE = "unparseable"                  # not JSON / wrong CSV column count / not a record
MISSING_FIELD = "missing_field"              # a required field absent or empty
BAD_VALUE = "bad_value"                      # a field of the wrong type (e.g. ts 'yesterday')
UNKNOWN_TYPE = "unknown_type"                # behaviour type not click/cart/fav/buy
UNKNOWN_SCENE = "unknown_scene"              # scene not search/recommend/promo/other
TS_OUTSIDE_PARTITION = "ts_outside_partition"  # ts not on the day of its dt= folder
LABEL_OUT_OF_RANGE = "label_out_of_range"    # click/buy/followed/label not 0/1, power_level not 1..7
BAD_FEATURES_LENGTH = "bad_features_length"  # impressions.features not of the deployment's length
UNREADABLE_FILE = "unreadable_file"          # a file that cannot be opened or decoded at all
REASONS = (UNPARSEABLE, MISSING_FIELD, BAD_VALUE, UNKNOWN_TYPE, UNKNOWN_SCENE,
           TS_OUTSIDE_PARTITION, LABEL_OUT_OF_RANGE, BAD_FEATURES_LENGTH, UNREADABLE_FILE)


class RowError(ValueError):
    """A row that breaks the contract: `reason` is one of REASONS, `detail` names the field."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@functools.lru_cache(maxsize=4096)
def day_start(day: str) -> int:
    """Unix seconds of 00:00 UTC of a 'YYYY-MM-DD' day."""
    return int(dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp())


def _missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _bounded(name: str, value: str) -> str:
    if len(value) > MAX_TEXT_CHARS:
        raise RowError(BAD_VALUE, f"field '{name}': {len(value):,} characters, more than "
                                  f"{MAX_TEXT_CHARS:,}")
    return value


def text(row: dict, name: str, required: bool = True) -> str:
    """A string field of at most MAX_TEXT_CHARS; integer ids are accepted and written as strings."""
    value = row.get(name)
    if type(value) is str and value and len(value) <= MAX_TEXT_CHARS:   # the common case first
        return value
    if _missing(value):
        if required:
            raise RowError(MISSING_FIELD, f"field '{name}' is missing or empty")
        return ""
    if isinstance(value, str):
        return _bounded(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(BAD_VALUE, f"field '{name}': expected a string, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise RowError(BAD_VALUE, f"field '{name}': expected a string id, got {value!r}")
        value = int(value)
    return str(value)


def integer(row: dict, name: str, required: bool = True, floor: bool = False):
    """An int field (CSV strings parsed); fractional values only when `floor` (timestamps)."""
    value = row.get(name)
    if type(value) is int:
        return value
    if _missing(value):
        if required:
            raise RowError(MISSING_FIELD, f"field '{name}' is missing or empty")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise RowError(BAD_VALUE, f"field '{name}': expected an integer, got {value!r}") from None
    if isinstance(value, dt.datetime):        # a Parquet timestamp column
        return int(value.replace(tzinfo=value.tzinfo or dt.timezone.utc).timestamp())
    if isinstance(value, float) and math.isfinite(value) and (floor or value.is_integer()):
        return int(math.floor(value))
    raise RowError(BAD_VALUE, f"field '{name}': expected an integer, got {value!r}")


def number(row: dict, name: str, required: bool = True):
    """A float field, or None when optional and empty (null or ""; a NaN is a bad value, counted)."""
    value = row.get(name)
    if isinstance(value, float) and math.isnan(value):
        raise RowError(BAD_VALUE, f"field '{name}': expected a finite number, got nan")
    if _missing(value):
        if required:
            raise RowError(MISSING_FIELD, f"field '{name}' is missing or empty")
        return None
    if isinstance(value, bool):
        raise RowError(BAD_VALUE, f"field '{name}': expected a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise RowError(BAD_VALUE, f"field '{name}': expected a number, got {value!r}") from None
    if not math.isfinite(value):
        raise RowError(BAD_VALUE, f"field '{name}': expected a finite number, got {value!r}")
    return value


def flag(row: dict, name: str) -> int:
    """A required 0/1 label."""
    value = integer(row, name)
    if value not in (0, 1):
        raise RowError(LABEL_OUT_OF_RANGE, f"field '{name}': {value} is not 0 or 1")
    return value


def text_list(row: dict, name: str) -> tuple:
    """A list of strings (CSV: one string, items separated by ';'); empty when absent."""
    value = row.get(name)
    if _missing(value):
        return ()
    if isinstance(value, str):
        return tuple(_bounded(name, v) for v in value.split(";") if v)
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return tuple(_bounded(name, str(v)) for v in value if not _missing(v))
    raise RowError(BAD_VALUE, f"field '{name}': expected a list of strings, got {value!r}")


def number_list(row: dict, name: str) -> tuple:
    """A required list of finite floats (CSV: ';'-separated)."""
    value = row.get(name)
    if value is None:
        raise RowError(MISSING_FIELD, f"field '{name}' is missing")
    if isinstance(value, str):
        value = [v for v in value.split(";") if v.strip()]
    elif not (isinstance(value, (list, tuple)) or hasattr(value, "tolist")):
        raise RowError(BAD_VALUE, f"field '{name}': expected a list of numbers, got {value!r}")
    out = []
    for v in value:
        try:
            if isinstance(v, bool):
                raise ValueError
            v = float(v)
        except (TypeError, ValueError):
            raise RowError(BAD_VALUE, f"field '{name}': {v!r} is not a number") from None
        if not math.isfinite(v):
            raise RowError(BAD_VALUE, f"field '{name}': {v!r} is not a finite number")
        out.append(v)
    return tuple(out)


def timestamp(row: dict, start: int) -> int:
    """`ts`, checked to fall on the partition day that starts at `start`."""
    ts = integer(row, "ts", floor=True)
    if not start <= ts < start + DAY_SECONDS:
        when = dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") \
            if -1e11 < ts < 1e11 else str(ts)
        day = dt.datetime.fromtimestamp(start, dt.timezone.utc).date().isoformat()
        raise RowError(TS_OUTSIDE_PARTITION, f"ts {ts} ({when}) is not on the partition day {day}")
    return ts


def _vocab(row: dict, name: str, index: dict, reason: str) -> int:
    value = text(row, name)
    try:
        return index[value]
    except KeyError:
        raise RowError(reason, f"field '{name}': {value!r} is not one of "
                               f"{', '.join(index)}") from None


def validate(table: str, row: dict, start: int, rank_features: int) -> tuple:
    """The valid tuple of one raw row (layouts in the module docstring), or RowError.

    Args:
      table: one of TABLES.
      row: field name -> raw value.
      start: Unix seconds of the row's partition day (00:00 UTC).
      rank_features: the deployment's length of impressions.features.
    """
    if not isinstance(row, dict):
        raise RowError(UNPARSEABLE, f"expected a record of fields, got {type(row).__name__}")
    if table == "behaviors":
        return (text(row, "user_id"), text(row, "item_id"), timestamp(row, start),
                _vocab(row, "type", BEHAVIOR_INDEX, UNKNOWN_TYPE),
                _vocab(row, "scene", SCENE_INDEX, UNKNOWN_SCENE))
    if table == "items":
        price = number(row, "price", required=False)
        if price is not None and price < 0:
            raise RowError(BAD_VALUE, f"field 'price': {price} is negative")
        return (text(row, "item_id"), text(row, "shop_id", False), text(row, "brand_id", False),
                text(row, "category_id", False), text_list(row, "tags"), price)
    if table == "users":
        age = integer(row, "age", required=False)
        if age is not None and not 0 <= age < 150:
            raise RowError(BAD_VALUE, f"field 'age': {age} is not an age in years")
        gender = _vocab(row, "gender", GENDER_INDEX, BAD_VALUE)
        power = integer(row, "power_level", required=False)
        if power is not None and not 1 <= power <= NUM_POWER_LEVELS:
            raise RowError(LABEL_OUT_OF_RANGE,
                           f"field 'power_level': {power} is not in 1..{NUM_POWER_LEVELS}")
        return (text(row, "user_id"), age, gender, power or 0)
    if table == "impressions":
        features = number_list(row, "features")
        if len(features) != rank_features:
            raise RowError(BAD_FEATURES_LENGTH, f"field 'features' has {len(features)} values, "
                                                f"the deployment has {rank_features}")
        return (text(row, "request_id"), text(row, "user_id"), timestamp(row, start),
                text(row, "query", False), text(row, "item_id"), integer(row, "position"),
                features, flag(row, "click"), flag(row, "buy"))
    if table == "follows":
        return (text(row, "user_id"), text(row, "talent_id"), timestamp(row, start),
                text(row, "talent_type", False), text_list(row, "talent_tags"),
                flag(row, "followed"))
    if table == "shop_prefs":
        return (text(row, "user_id"), text(row, "shop_id"), timestamp(row, start),
                flag(row, "label"))
    raise ValueError(f"unknown table '{table}' (tables: {', '.join(TABLES)})")
