"""Read the records of a W&B offline run file (RUN_DIR/wandb/offline-run-*/run-ID.wandb) with wandb's own protobuf.

The file is the LevelDB log format (github.com/google/leveldb doc/log_format.md) behind a 7-byte W&B header
(":W&B", magic 0xBEE1, version 0): 32 KiB blocks of chunks, each `crc32 (4) | length (2) | type (1) | data`,
type FULL=1 or FIRST=2, MIDDLE=3, LAST=4 for a record split over blocks, a block tail under 7 bytes is zero
padding. Each record is a serialized `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
BLOCK = 32768


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert HEADER.unpack(data[:HEADER.size]) == (b":W&B", 0xBEE1, 0), "not a W&B run file"
    pos, pending, out = HEADER.size, b"", []
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # block trailer
            pos += left
            continue
        _crc, length, kind = CHUNK.unpack(data[pos:pos + CHUNK.size])
        pos += CHUNK.size
        pending += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def history(path: Path) -> list[dict]:
    """Every wandb.log call as {key: value}."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_config(path: Path) -> tuple[str, dict]:
    """(run id, config) of the run record."""
    for record in read_records(path):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_id, {u.key: json.loads(u.value_json) for u in record.run.config.update}
    raise AssertionError(f"{path} has no run record")
