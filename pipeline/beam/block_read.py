"""Beam, columnar: read raw files into blocks of valid rows, validated a whole column at a time.

A Parquet or JSON Lines file is read with pyarrow and checked column by column
(pyarrow.compute). When every row passes, the file becomes one block (rawlogs.schema's
VALID_SCHEMAS layouts). Otherwise (a bad row, an unexpected type, CSV, an unreadable file) the
file goes through the row path's validator (read.read_file), so dead letters, reasons and row
numbers are the row path's, and its valid rows become the block.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import BEHAVIOR_INDEX, GENDER_INDEX, NUM_POWER_LEVELS, SCENE_INDEX
from pipeline.beam import blocks
from pipeline.beam.split import SplitByTag
from pipeline.beam.read import DEAD, _open_binary, file_counts, file_format, read_file
from pipeline.rawlogs.rows import DAY_SECONDS, MAX_TEXT_CHARS, day_start
from pipeline.rawlogs.schema import SCHEMAS, VALID_SCHEMAS

BLOCK, REJECTED, COUNTS = "block", "rejected", "counts"
KINDS = (BLOCK, REJECTED, COUNTS)


class NotClean(Exception):
    """The file needs the row validator (a bad row or a type the column checks do not take)."""


def read_arrow(path: str) -> pa.Table:
    """A Parquet or JSON Lines file as an Arrow table; NotClean for CSV (read row by row)."""
    fmt, gzipped = file_format(path)
    if fmt == "csv":
        raise NotClean("csv")
    with _open_binary(path, gzipped) as stream:
        data = stream.read()
    if fmt == "parquet":
        import pyarrow.parquet as pq
        return pq.read_table(pa.BufferReader(data))
    return None if not data.strip() else data


def _json(data: bytes, table: str) -> pa.Table:
    import pyarrow.json as pj
    options = pj.ParseOptions(explicit_schema=SCHEMAS[table], unexpected_field_behavior="ignore")
    return pj.read_json(pa.BufferReader(data), parse_options=options)


def _bounded(strings: pa.Array) -> pa.Array:
    """The strings, when none is longer than the row validator allows."""
    _require(pc.less_equal(pc.utf8_length(strings), MAX_TEXT_CHARS))
    return strings


def _require(ok) -> None:
    if not (ok if isinstance(ok, bool) else pc.all(ok).as_py() in (True, None)):
        raise NotClean("check failed")


class Columns:
    """Checks of one table's columns with the row validator's rules (pipeline/rawlogs/rows.py)."""

    def __init__(self, table: pa.Table, start: int):
        self.table, self.start = table, start

    def raw(self, name: str, kinds) -> pa.Array:
        if name not in self.table.column_names:
            return None
        column = self.table.column(name).combine_chunks()
        _require(any(check(column.type) for check in kinds) or pa.types.is_null(column.type))
        return column

    def text(self, name: str, required: bool = True) -> pa.Array:
        column = self.raw(name, (pa.types.is_string,))
        if column is None or pa.types.is_null(column.type):
            _require(not required)
            return pa.array([""] * self.table.num_rows, pa.string())
        if required:
            _require(pc.and_kleene(pc.is_valid(column), pc.not_equal(column, "")))
            return _bounded(column)
        return _bounded(pc.fill_null(column, ""))

    def integer(self, name: str, required: bool = True) -> pa.Array:
        column = self.raw(name, (pa.types.is_integer,))
        _require(column is not None or not required)
        if column is None or pa.types.is_null(column.type):
            _require(not required)
            return pa.nulls(self.table.num_rows, pa.int64())
        if required:
            _require(column.null_count == 0)
        return column.cast(pa.int64())

    def ts(self) -> pa.Array:
        column = self.integer("ts")
        _require(pc.and_(pc.greater_equal(column, self.start),
                         pc.less(column, self.start + DAY_SECONDS)))
        return column

    def flag(self, name: str) -> pa.Array:
        column = self.integer(name)
        _require(pc.is_in(column, pa.array([0, 1])))
        return column

    def vocab(self, name: str, index: dict) -> pa.Array:
        positions = pc.index_in(self.text(name), value_set=pa.array(list(index)))
        _require(positions.null_count == 0)
        return pc.add(positions.cast(pa.int64()), 1)      # index dicts number names from 1

    def text_list(self, name: str) -> pa.Array:
        column = self.raw(name, (lambda t: pa.types.is_list(t) and pa.types.is_string(t.value_type),))
        if column is None or pa.types.is_null(column.type):
            return pa.array([[]] * self.table.num_rows, pa.list_(pa.string()))
        values = pc.list_flatten(column)
        # the row validator drops empty elements: such rows take the row path
        _require(values.null_count == 0 and not pc.any(pc.equal(values, "")).as_py())
        _bounded(values)
        return pc.fill_null(column, pa.scalar([], pa.list_(pa.string()))).cast(pa.list_(pa.string()))

    def number_list(self, name: str, length: int) -> pa.Array:
        column = self.raw(name, (lambda t: pa.types.is_list(t) and pa.types.is_floating(t.value_type),))
        _require(column is not None and column.null_count == 0)
        values = pc.list_flatten(column)
        _require(values.null_count == 0 and pc.all(pc.is_finite(values)).as_py() in (True, None))
        _require(pc.all(pc.equal(pc.list_value_length(column), length)).as_py() in (True, None))
        return column.cast(pa.list_(pa.float64()))


def validate_block(table: str, data: pa.Table, start: int, rank_features: int) -> pa.Table:
    """The VALID_SCHEMAS columns (without path and row) of a table whose every row is valid;
    NotClean otherwise."""
    c = Columns(data, start)
    if table == "behaviors":
        arrays = [c.text("user_id"), c.text("item_id"), c.ts(), c.vocab("type", BEHAVIOR_INDEX),
                  c.vocab("scene", SCENE_INDEX)]
    elif table == "items":
        price = c.raw("price", (pa.types.is_floating, pa.types.is_integer))
        price = pa.nulls(data.num_rows, pa.float64()) if price is None else price.cast(pa.float64())
        finite = pc.fill_null(pc.and_(pc.is_finite(price), pc.greater_equal(price, 0)), True)
        _require(finite)
        arrays = [c.text("item_id"), c.text("shop_id", False), c.text("brand_id", False),
                  c.text("category_id", False), c.text_list("tags"), price]
    elif table == "users":
        age, power = c.integer("age", False), c.integer("power_level", False)
        _require(pc.fill_null(pc.and_(pc.greater_equal(age, 0), pc.less(age, 150)), True))
        _require(pc.fill_null(pc.and_(pc.greater_equal(power, 1),
                                      pc.less_equal(power, NUM_POWER_LEVELS)), True))
        arrays = [c.text("user_id"), age, c.vocab("gender", GENDER_INDEX), pc.fill_null(power, 0)]
    elif table == "impressions":
        arrays = [c.text("request_id"), c.text("user_id"), c.ts(), c.text("query", False),
                  c.text("item_id"), c.integer("position"), c.number_list("features", rank_features),
                  c.flag("click"), c.flag("buy")]
    elif table == "follows":
        arrays = [c.text("user_id"), c.text("talent_id"), c.ts(), c.text("talent_type", False),
                  c.text_list("talent_tags"), c.flag("followed")]
    else:
        arrays = [c.text("user_id"), c.text("shop_id"), c.ts(), c.flag("label")]
    return arrays


def rows_block(table: str, rows: list, path: str) -> pa.Table:
    """The block of valid row tuples [(row number, tuple)] from the row validator."""
    schema = VALID_SCHEMAS[table]
    names = [f.name for f in schema if f.name not in ("path", "row")]
    columns = list(zip(*(r for _, r in rows))) if rows else [()] * len(names)
    arrays = [pa.array(list(col), schema.field(n).type) for n, col in zip(names, columns)]
    return with_order(table, arrays, path, [n for n, _ in rows])


def with_order(table: str, arrays: list, path: str, numbers) -> pa.Table:
    schema = VALID_SCHEMAS[table]
    if "path" in schema.names:
        numbers = np.asarray(numbers, np.int64)
        arrays = arrays + [pa.array([path] * len(numbers), pa.string()), pa.array(numbers)]
    return pa.Table.from_arrays(arrays, schema=schema)


def of_user_pass(block: pa.Table, user_pass: tuple[int, int]) -> pa.Table:
    """The rows of a user-keyed block whose user falls in pass `index` of `count` (crc32 of the
    user id, as every shard here): each user is in exactly one pass."""
    index, count = user_pass
    if count == 1 or "user_id" not in block.column_names or not block.num_rows:
        return block          # items have no user: every pass joins them all
    return block.filter(pa.array(blocks.shard_ids(block.column("user_id"), count) == index))


class ReadBlocksFn(beam.DoFn):
    """(table, day, path) -> (BLOCK, (table, day, packed block)), (REJECTED, (day, (path, row,
    line))), (COUNTS, (day, counts)): one tagged stream, split by SplitByTag.

    user_pass (index, count): a local run in passes (beam/passes.py) keeps only the users of its
    pass; every pass reads every file whole, so pass 0 alone reports rows, rejects and counts."""

    def __init__(self, rank_features: int, user_pass: tuple[int, int] = (0, 1)):
        self.rank_features = rank_features
        self.user_pass = tuple(user_pass)

    def process(self, element):
        table, day, path = element
        try:
            data = read_arrow(path)
            if isinstance(data, bytes):
                data = _json(data, table)
            if data is None:
                raise NotClean("empty")
            data.validate(full=True)      # pyarrow reads bytes that are not UTF-8 into strings
            n = data.num_rows
            arrays = validate_block(table, data, day_start(day), self.rank_features)
            block = with_order(table, arrays, path, np.arange(1, n + 1))
            counts = file_counts(table, path, n, {})
        except Exception:  # noqa: BLE001  (anything the column checks do not take: row by row)
            valid = []
            for item in read_file(table, day, path, self.rank_features):
                if isinstance(item, dict):
                    counts = item
                elif item[0] == DEAD:
                    if self.user_pass[0] == 0:
                        yield REJECTED, (day, (path, item[1], item[2]))
                else:
                    valid.append(item[1:])
            block = rows_block(table, valid, path)
        block = of_user_pass(block, self.user_pass)
        if block.num_rows:
            yield BLOCK, (table, day, blocks.pack(block))
        if self.user_pass[0] == 0:
            yield COUNTS, (day, counts)


class ReadBlocks(beam.PTransform):
    """(table, day, path) of every file -> a list of PCollections in KINDS order."""

    def __init__(self, files, rank_features: int, user_pass: tuple[int, int] = (0, 1)):
        super().__init__()
        self.files = sorted(files)
        self.rank_features = rank_features
        self.user_pass = tuple(user_pass)

    def expand(self, pbegin):
        tagged = (pbegin
                  | "ListFiles" >> beam.Create(self.files)
                  | "SpreadFiles" >> beam.Reshuffle()
                  | "ReadAndValidate" >> beam.ParDo(ReadBlocksFn(self.rank_features, self.user_pass)))
        return tagged | "ByKind" >> SplitByTag(KINDS)
