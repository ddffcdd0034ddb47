"""Avro encoding in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary."""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro

from schemas.catalogue import BY_ID, SchemaEntry
from schemas.errors import MalformedMessage, UnsupportedSchema

MAGIC = 0
_HEADER = struct.Struct(">bI")


def frame_header(entry: SchemaEntry) -> bytes:
    """The five bytes before a record of this schema on the wire."""
    return _HEADER.pack(MAGIC, entry.schema_id)


def encode(entry: SchemaEntry, record: dict[str, Any]) -> bytes:
    """Encode a record with the given schema, framed for the wire."""
    out = io.BytesIO()
    out.write(frame_header(entry))
    fastavro.schemaless_writer(out, entry.parsed, record)
    return out.getvalue()


def schema_id_of(data: bytes) -> int:
    """Return the schema id a framed message names, or raise MalformedMessage."""
    if data is None or len(data) < _HEADER.size:
        raise MalformedMessage(
            f"message is {0 if data is None else len(data)} bytes; a framed Avro message needs at least 5"
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedMessage(f"first byte is {magic}, not the Confluent magic byte 0")
    return schema_id


def decode(data: bytes, expected: SchemaEntry) -> dict[str, Any]:
    """Decode a framed message of the expected schema's subject, resolving an older writer version to it."""
    schema_id = schema_id_of(data)
    writer = BY_ID.get(schema_id)
    if writer is None:
        raise UnsupportedSchema(f"schema id {schema_id} is not in healthbook's catalogue")
    if writer.subject != expected.subject:
        raise UnsupportedSchema(
            f"schema id {schema_id} ({writer.subject}) where {expected.subject} was expected"
        )
    body = io.BytesIO(data)
    body.seek(_HEADER.size)
    try:
        if writer is expected:
            record = fastavro.schemaless_reader(body, expected.parsed)
        else:
            record = fastavro.schemaless_reader(body, writer.parsed, expected.parsed)
    except Exception as exc:  # bytes from outside: whatever fastavro raises on them, the message is malformed
        raise MalformedMessage(
            f"Avro body does not match {expected.subject} ({type(exc).__name__}: {exc})") from exc
    if body.tell() != len(data):
        raise MalformedMessage(
            f"{len(data) - body.tell()} bytes left over after the {expected.subject} record"
        )
    return record


def text_key(key: bytes) -> str:
    """A message key as text, or raise MalformedMessage when it is not UTF-8."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"message key is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
