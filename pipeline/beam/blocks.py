"""Arrow blocks as Beam elements: compact bytes through the shuffles, stable shard split by a key column."""
from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

_ZSTD = pa.ipc.IpcWriteOptions(compression="zstd")
_PLAIN = pa.ipc.IpcWriteOptions()
ZSTD_FROM_BYTES = 1 << 20     # zstd costs ~0.3 ms a block whatever its size: only big ones pay it


def pack(table: pa.Table, compress: bool = False) -> bytes:
    """An Arrow table as IPC bytes, zstd-compressed when large or asked (a shuffle costs per byte)."""
    sink = pa.BufferOutputStream()
    options = _ZSTD if compress or table.nbytes >= ZSTD_FROM_BYTES else _PLAIN
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(blob).read_all()


def concat(tables: list, schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def shard_ids(column, shards: int) -> np.ndarray:
    """The shard (crc32 of the UTF-8 value, mod shards) of every value of a string column.

    Hashed once per distinct value: the same in every process, run and runner.
    """
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = column.dictionary_encode()
    per_value = np.fromiter((zlib.crc32(v.encode("utf-8")) % shards
                             for v in encoded.dictionary.to_pylist()), np.int64,
                            len(encoded.dictionary))
    return per_value[encoded.indices.to_numpy(zero_copy_only=False)]


def split(table: pa.Table, column: str, shards: int):
    """Yields (shard, rows of that shard) for every shard with rows, in shard order."""
    if table.num_rows == 0:
        return
    ids = shard_ids(table.column(column), shards)
    # a stable sort of small integers: numpy's radix sort (for 16 bits or fewer)
    order = np.argsort(ids.astype(np.uint16) if shards <= 1 << 16 else ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(shards + 1))
    for shard in range(shards):
        lo, hi = bounds[shard], bounds[shard + 1]
        if hi > lo:
            yield shard, table.take(pa.array(order[lo:hi]))
