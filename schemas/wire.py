"""Confluent wire format for Avro record values: magic byte 0, 4-byte big-endian schema id, then
the record in Avro binary encoding (no container, no schema).

``AvroSerde.decode`` returns what fastavro returns: dicts for records, ``str``/``bytes``/``int``/
``float``/``bool``/``None``, and for ``timestamp-millis`` a tz-aware UTC ``datetime``.
``AvroSerde.encode`` accepts an ``int`` (epoch millis) or a ``datetime`` there (naive = UTC).
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Mapping
from typing import Any

from fastavro import parse_schema, schemaless_reader
from fastavro.read import SchemaResolutionError

from schemas.avro_writer import compile_writer
from schemas.avsc import (
    CLASSIFIED_SCHEMA,
    ITEM_SCHEMA,
    REJECTED_SCHEMA,
    Schema,
    canonical_json,
    full_name,
    load_schema,
)
from schemas.errors import UnknownSchemaIdError
from schemas.registry import Catalogue
from schemas.timestamps import timestamp_normaliser, to_millis
from schemas.validation import Invalid, compile_validator

__all__ = [
    "CLASSIFIED_SCHEMA",
    "DECODE_ERROR_CODES",
    "ITEM_SCHEMA",
    "MAGIC_BYTE",
    "REJECTED_SCHEMA",
    "AvroSerde",
    "DecodeError",
    "load_schema",
    "to_millis",
]

MAGIC_BYTE = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">BI")

DECODE_ERROR_CODES = (
    "empty_payload",
    "bad_magic_byte",
    "truncated_header",
    "unknown_schema_id",
    "incompatible_schema",
    "truncated_avro",
    "invalid_utf8",
    "malformed_avro",
    "trailing_bytes",
)

# fastavro reports a negative string/bytes length as "Expected -2 bytes, read 14" (an EOFError).
_NEGATIVE_LENGTH = re.compile(r"Expected -\d+ bytes")


class DecodeError(Exception):
    """A record value that cannot be decoded; ``code`` is one of ``DECODE_ERROR_CODES``."""

    def __init__(self, code: str, message: str, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.schema_id = schema_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.schema_id))


class AvroSerde:
    """Encodes records of ``reader_schema`` and decodes any registered writer schema into it.

    The schema id for encoding is asked of the catalogue once, on first use. Decoding looks the
    writer schema up by the id in the payload (once per id) and lets fastavro resolve it to
    ``reader_schema``. A failing catalogue (e.g. registry unreachable) raises its own error, not
    ``DecodeError``: that says nothing about the record.
    """

    def __init__(self, catalogue: Catalogue, subject: str, reader_schema: Mapping[str, Any]) -> None:
        self.catalogue = catalogue
        self.subject = subject
        self.reader_schema: Schema = dict(reader_schema)
        self._name = full_name(reader_schema)
        self._canonical = canonical_json(reader_schema)
        self._parsed = parse_schema(self.reader_schema)
        self._write = compile_writer(self._parsed)
        self._normalise = timestamp_normaliser(self.reader_schema)
        self._validate = compile_validator(self.reader_schema)
        self._schema_id: int | None = None
        # schema id -> (parsed writer schema, parsed reader schema or None when equal to writer)
        self._plans: dict[int, tuple[Any, Any]] = {}
        self._unusable: dict[int, str] = {}  # schema id -> why its writer schema cannot be used

    def __repr__(self) -> str:
        return f"AvroSerde({self._name}, subject={self.subject!r}, catalogue={self.catalogue!r})"

    @property
    def schema_id(self) -> int:
        if self._schema_id is None:
            self._schema_id = self.catalogue.id_for(self.subject, self.reader_schema)
        return self._schema_id

    def encode(self, record: Mapping[str, Any], *, validate: bool = True) -> bytes:
        """Confluent-framed Avro bytes; ValueError if the record does not fit the schema.

        Keys that are not fields of the schema are ignored (as fastavro does). ``validate=False`` skips
        the full check (≈ 100 µs for a ClassifiedItem) for records the service builds itself from typed
        values; the writer (compiled from the schema, byte-identical to fastavro's) still refuses wrong
        types, but not out-of-range numbers.
        """
        if self._normalise is not None:
            record = self._normalise(record)
        if validate:
            try:
                self._validate(record)
            except Invalid as exc:
                raise ValueError(f"record does not fit Avro schema {self._name}: {exc}") from None
        buf = bytearray(_HEADER.pack(MAGIC_BYTE, self.schema_id))
        try:
            self._write(buf, record)
        # what the validator let through: the writer's errors (schemas/avro_writer.py)
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError, struct.error) as exc:
            raise ValueError(f"record does not fit Avro schema {self._name}: {exc}") from None
        return bytes(buf)

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """The record in ``data`` as a dict shaped by the reader schema; raises ``DecodeError``."""
        if not data:
            raise DecodeError("empty_payload", "empty record value")
        if data[0] != MAGIC_BYTE:
            found = f"first byte is 0x{data[0]:02x}, expected 0x00 (Confluent wire format with schema id)"
            if data[0] == 1:
                found += "; 0x01 is the schema-GUID framing, which is not supported"
            raise DecodeError("bad_magic_byte", found)
        if len(data) < HEADER_SIZE:
            raise DecodeError(
                "truncated_header", f"value has {len(data)} bytes, shorter than the 5-byte header"
            )
        schema_id = _HEADER.unpack_from(data)[1]
        plan = self._plans.get(schema_id)
        if plan is None:
            plan = self._plan(schema_id)
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buf, plan[0], plan[1])
        except Exception as exc:
            raise _read_error(exc, buf, len(data), schema_id) from None
        if buf.tell() != len(data):
            raise DecodeError(
                "trailing_bytes",
                f"{len(data) - buf.tell()} bytes after the end of the record (schema id {schema_id})",
                schema_id,
            )
        return record

    def _plan(self, schema_id: int) -> tuple[Any, Any]:
        if schema_id not in self._unusable:
            try:
                writer = self.catalogue.schema_for(schema_id)
            except UnknownSchemaIdError as exc:
                raise DecodeError("unknown_schema_id", exc.message, schema_id) from None
            except KeyError:
                raise DecodeError("unknown_schema_id", f"unknown schema id {schema_id}", schema_id) from None
            except ValueError as exc:  # e.g. the registry holds a Protobuf schema under this id
                self._unusable[schema_id] = str(exc)
            else:
                try:
                    plan = self._resolution(writer)
                except Exception as exc:
                    self._unusable[schema_id] = f"writer schema id {schema_id} is not valid Avro: {exc}"
                else:
                    self._plans[schema_id] = plan
                    return plan
        raise DecodeError("incompatible_schema", self._unusable[schema_id], schema_id)

    def _resolution(self, writer: Schema) -> tuple[Any, Any]:
        if canonical_json(writer) == self._canonical:
            return self._parsed, None  # fastavro skips resolution without a reader schema
        return parse_schema(writer), self._parsed


def _read_error(exc: Exception, buf: io.BytesIO, size: int, schema_id: int) -> DecodeError:
    code, what = _classify(exc, exhausted=buf.tell() >= size)
    return DecodeError(code, f"{what} (schema id {schema_id}, at byte {buf.tell()} of {size})", schema_id)


def _classify(exc: Exception, exhausted: bool) -> tuple[str, str]:
    text = str(exc)
    if len(text) > 300:  # fastavro puts whole schemas into resolution errors
        text = text[:297] + "..."
    if isinstance(exc, SchemaResolutionError):
        return "incompatible_schema", f"writer schema does not resolve to the reader schema: {text}"
    if isinstance(exc, UnicodeDecodeError):
        return "invalid_utf8", f"string field is not valid UTF-8: {exc.reason}"
    if isinstance(exc, EOFError):
        if _NEGATIVE_LENGTH.search(text):
            return "malformed_avro", "negative length"
        return "truncated_avro", "value ends inside the record"
    # fastavro's compiled reader signals a varint running past the end as an IndexError on the
    # buffer ("string index out of range") and a union index out of range as "list index ...".
    if isinstance(exc, IndexError):
        if exhausted and "list index" not in text:
            return "truncated_avro", "value ends inside the record"
        return "malformed_avro", "union branch index out of range"
    return "malformed_avro", f"invalid Avro data: {type(exc).__name__}: {text}"
