"""Request shards of a RecFlow day: the unit of work that keeps preprocessing memory bounded.

A day's requests are split into ``num_shards`` disjoint shards by a fixed hash of the request
id, so all of a request's all_stage rows, its request_id_dict entry and its history fall in the
same shard, and a shard can be joined and organised on its own, with no shuffle
(``tfcascade.beam.preprocess``). Reading one shard of an all_stage file streams the file's
record batches and keeps only that shard's rows, so the memory a shard needs is bounded by its
own rows plus one record batch, not by the day or the whole input.

A request id that is not a finite int64 integer (a row that will be dead-lettered) falls in
shard 0.
"""

from __future__ import annotations

import io
import math
import typing

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc

from tfcascade.data.schema import COLUMNS, SchemaError, validate_frame

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def request_shards(request_ids, num_shards: int) -> np.ndarray:
    """The shard of each request id (splitmix64 of the int64 id, modulo ``num_shards``).

    Args:
      request_ids: a 1-D array-like of request ids (ints, floats holding integers, or objects).
      num_shards: >= 1.

    Returns:
      ``int64 [n]`` shard indices in ``[0, num_shards)``; ids that are not finite int64
      integers get shard 0.
    """
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got num_shards={num_shards!r}")
    values = np.asarray(request_ids)
    shards = np.zeros(values.shape[0], np.int64)
    if num_shards == 1 or values.size == 0:
        return shards
    if values.dtype.kind in "iu":
        ok, ints = np.ones(values.shape[0], bool), values.astype(np.int64)
    elif values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(values) & (np.abs(values) < 2.0**63) & (values == np.round(values))
        ints = np.where(ok, values, 0).astype(np.int64)
    else:
        ints_list = [_integer(v) for v in values.tolist()]
        ok = np.array([v is not None for v in ints_list], bool)
        ints = np.array([v if v is not None else 0 for v in ints_list], np.int64)
    with np.errstate(over="ignore"):
        h = ints.view(np.uint64) + _GOLDEN
        h = (h ^ (h >> np.uint64(30))) * _MIX[0]
        h = (h ^ (h >> np.uint64(27))) * _MIX[1]
        h = h ^ (h >> np.uint64(31))
    shards[ok] = (h % np.uint64(num_shards)).astype(np.int64)[ok]
    return shards


def _integer(value) -> int | None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        return None
    value = int(value)
    return value if -(2**63) <= value < 2**63 else None


Source = str | bytes | typing.BinaryIO


def _open(data: Source):
    """An Arrow IPC file reader of a local path (memory-mapped), of the file's bytes or of a
    seekable binary file object (only the footer and the record batches asked for are read),
    or None for a Feather V1 file (read whole)."""
    try:
        if isinstance(data, str):
            handle = pa.memory_map(data)
        elif isinstance(data, bytes):
            handle = pa.BufferReader(data)
        else:
            data.seek(0)
            handle = pa.PythonFile(data, mode="r")
        return ipc.open_file(handle)
    except (pa.ArrowInvalid, OSError):
        return None


def _read_whole(data: Source, source: str) -> pa.Table:
    try:
        if isinstance(data, bytes):
            data = io.BytesIO(data)
        elif not isinstance(data, str):
            data.seek(0)
        return feather.read_table(data)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise SchemaError(f"{source}: cannot be read as a feather file ({err})") from err


def all_stage_rows(data: Source, source: str) -> int:
    """How many rows an all_stage file holds.

    Args:
      data: a local path, the file's bytes or a seekable binary file object.
      source: the file's name, for errors.

    Raises:
      SchemaError: the file is not a feather file.
    """
    reader = _open(data)
    if reader is None:
        return _read_whole(data, source).num_rows
    try:
        return sum(reader.get_record_batch(i).num_rows for i in range(reader.num_record_batches))
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(f"{source}: cannot be read as a feather file ({err})") from err


def read_all_stage(data: Source, source: str, shard: int = 0, num_shards: int = 1) -> pd.DataFrame:
    """The rows of one request shard of an all_stage file, in file order, columns checked.

    Args:
      data: a local path (memory-mapped), the file's bytes or a seekable binary file object.
      source: the file's name, for errors.
      shard, num_shards: which shard (``request_shards``); ``(0, 1)`` is the whole file.

    Returns:
      A frame with the RecFlow all_stage columns (``schema.COLUMNS``); values are as pandas
      converts the shard's Arrow columns (an integer column with a null becomes float).

    Raises:
      SchemaError: not a feather file, or a column is missing.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got shard={shard}")
    reader = _open(data)
    try:
        if reader is None:
            table = _read_whole(data, source)
            batches, schema = table.to_batches(), table.schema
        else:
            batches, schema = (reader.get_record_batch(i) for i in range(reader.num_record_batches)), reader.schema
        validate_frame(schema.empty_table().to_pandas(), source)
        kept = []
        for batch in batches:
            if num_shards > 1:
                ids = batch.column(schema.get_field_index("request_id")).to_numpy(zero_copy_only=False)
                batch = batch.filter(pa.array(request_shards(ids, num_shards) == shard))
            kept.append(batch)
        frame = pa.Table.from_batches(kept, schema=schema).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        raise SchemaError(f"{source}: cannot be read as a feather file ({err})") from err
    return frame[list(COLUMNS)]
