"""The compiled Avro writer (schemas/avro_writer.py) against fastavro's schemaless_writer as the oracle:
the same bytes for every schema of the package and random records, the same refusals, the fallback."""

from __future__ import annotations

import array
import copy
import io
import math
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import extract_logical_type, extract_record_type

from schemas import CLASSIFIED_SCHEMA, AvroSerde, LocalCatalogue, load_schema
from schemas.avro_writer import UnsupportedSchemaError, compile_writer
from schemas.avsc import SCHEMA_DIR

PACKAGE_SCHEMAS = sorted(path.name for path in SCHEMA_DIR.glob("*.avsc"))
RECORDS_PER_SCHEMA = 300

# The corners of fastavro's writer that our own schemas do not reach.
EDGE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Edge",
    "namespace": "test",
    "fields": [
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long", "default": 7},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double", "default": "NaN"},
        {"name": "b", "type": "boolean", "default": False},
        {"name": "raw", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "fx_or_null", "type": ["null", "Four"], "default": None},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["red", "green", "blue"]}},
        {"name": "mixed", "type": ["null", "int", "long", "float", "double", "string", "boolean", "bytes"]},
        {"name": "float_first", "type": ["float", "string", "double"]},
        {"name": "only_float", "type": ["null", "float"], "default": None},
        {"name": "wide", "type": ["long", "double"]},  # an int beyond 64 bits: the double
        {"name": "enum_first", "type": ["Color", "string"]},
        {"name": "array_first", "type": [{"type": "array", "items": "int"}, "bytes"]},
        {
            "name": "records",
            "type": [
                "null",
                {"type": "record", "name": "A", "fields": [{"name": "a", "type": "long"}]},
                {
                    "type": "record",
                    "name": "B",
                    "fields": [
                        {"name": "a", "type": "long"},
                        {"name": "b", "type": ["null", "string"], "default": None},
                    ],
                },
            ],
            "default": None,
        },
        {"name": "nested", "type": {"type": "map", "values": {"type": "array", "items": ["null", "double"]}}},
        {"name": "grid", "type": {"type": "array", "items": {"type": "map", "values": "float"}}},
        {
            "name": "micros",
            "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}],
            "default": None,
        },
        {"name": "plain_double", "type": {"type": "double"}},
        {
            "name": "tree",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Node",
                    "fields": [
                        {"name": "value", "type": "string"},
                        {"name": "next", "type": ["null", "Node"], "default": None},
                        {"name": "children", "type": {"type": "array", "items": "Node"}, "default": []},
                    ],
                },
            ],
            "default": None,
        },
        {"name": "nothing", "type": "null"},
        {"name": "nulls", "type": {"type": "array", "items": "null"}},
        {"name": "count", "type": ["null", "int"], "default": None},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}

# fastavro converts these logical types itself (decimal, uuid, date): the whole schema falls back to it.
LOGICAL_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Logical",
    "namespace": "test",
    "fields": [
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}]},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}

STRINGS = (
    "",
    "item-1",
    "Болт М8х40 оцинкованный",
    "Услуга по монтажу",
    "🔩🚀 emoji ✓",
    "mixed Ёж 𝔘 \u00e9\u0301",
    "ж" * 5000,  # 10,000 UTF-8 bytes: a length beyond the precomputed table
    "x" * 127,
    "x" * 8191,
    "x" * 8192,
)
LONGS = (0, 1, -1, 63, 64, -64, -65, 8191, 8192, 2**31 - 1, -(2**31), 2**31, 2**40, 2**63 - 1, -(2**63))
INTS = (0, 1, -1, 2**31 - 1, -(2**31), 2**31 - 2, -(2**31) + 1, 1000, -1000)
DOUBLES = (0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, -1e308, 5e-324, 1.5, -0.25, 1 / 3)
INT_DOUBLES = (0, 3, -7, 2**53 + 1, -(2**63), 2**70)  # ints given for double fields
FLOATS = (*DOUBLES, 3.4028235e38, 1e39, -1e39, 1e-46)
TIMESTAMPS = (0, -1, 1_709_296_215_123, 2**41, -(2**41), 253_402_300_799_999)
DATETIMES = (
    datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC),
    datetime(1960, 1, 1, tzinfo=UTC),
    datetime(2024, 3, 1, 12, 30, 15, 999000),  # naive: fastavro's conversion in both writers
)


def fastavro_bytes(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


def compiled_bytes(schema: Any, record: Any) -> bytes:
    buf = bytearray()
    compile_writer(schema, fallback=False)(buf, record)
    return bytes(buf)


class RandomRecords:
    """Random values of a parsed schema, valid ones (as fastavro's writer sees them)."""

    def __init__(self, schema: Any, seed: int) -> None:
        self.named: dict[str, Any] = {}
        self.schema = parse_schema(schema, self.named)
        self.rng = random.Random(seed)

    def record(self) -> Any:
        return self.value(self.schema, 0)

    def value(self, schema: Any, depth: int) -> Any:
        rng = self.rng
        if isinstance(schema, list):
            branches = schema
            if depth > 3 and "null" in branches:
                return None
            branch = rng.choice(branches)
            value = self.value(branch, depth + 1)
            if isinstance(value, tuple):  # in a union, a tuple names the branch
                value = list(value)
            if isinstance(branch, str) and branch in self.named and rng.random() < 0.2:
                return (branch, value)  # fastavro's notation naming the branch
            return value
        if isinstance(schema, str) and schema in self.named:
            return self.value(self.named[schema], depth)
        kind = extract_record_type(schema)
        logical = extract_logical_type(schema)
        if logical in ("long-timestamp-millis", "long-timestamp-micros"):
            return rng.choice(DATETIMES) if rng.random() < 0.2 else rng.choice(TIMESTAMPS)
        if kind == "null":
            return None
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "int":
            return rng.choice(INTS) if rng.random() < 0.5 else rng.randint(-(2**31), 2**31 - 1)
        if kind == "long":
            return rng.choice(LONGS) if rng.random() < 0.5 else rng.randint(-(2**63), 2**63 - 1)
        if kind == "float":
            return rng.choice(FLOATS) if rng.random() < 0.7 else rng.choice(INT_DOUBLES)
        if kind == "double":
            return rng.choice(DOUBLES) if rng.random() < 0.7 else rng.choice(INT_DOUBLES)
        if kind == "string":
            return rng.choice(STRINGS) if rng.random() < 0.7 else f"s{rng.randint(0, 10**6)}"
        if kind == "bytes":
            raw = rng.randbytes(rng.choice((0, 1, 5, 300)))
            return bytearray(raw) if rng.random() < 0.2 else raw
        if kind == "fixed":
            return rng.randbytes(schema["size"])
        if kind == "enum":
            return rng.choice(schema["symbols"])
        if kind == "array":
            items = [self.value(schema["items"], depth + 1) for _ in range(self.size(depth))]
            return tuple(items) if rng.random() < 0.1 else items
        if kind == "map":
            return {
                rng.choice(STRINGS[:6]) + str(i): self.value(schema["values"], depth + 1)
                for i in range(self.size(depth))
            }
        if kind == "record":
            record = {}
            for field in schema["fields"]:
                optional = "default" in field or "null" in field["type"]
                if optional and rng.random() < 0.2:
                    continue  # missing: the default, or None
                record[field["name"]] = self.value(field["type"], depth + 1)
            if rng.random() < 0.2:
                record["not_in_schema"] = object()  # ignored by both writers
            return record
        raise AssertionError(f"no random values for {schema!r}")

    def size(self, depth: int) -> int:
        return 0 if depth > 3 or self.rng.random() < 0.25 else self.rng.randint(1, 4)


def assert_same_bytes(schema: Any, records: RandomRecords, count: int) -> None:
    write = compile_writer(schema, fallback=False)
    for n in range(count):
        record = records.record()
        buf = bytearray()
        write(buf, record)
        assert bytes(buf) == fastavro_bytes(records.schema, record), f"record {n}: {record!r}"


@pytest.mark.parametrize("file_name", PACKAGE_SCHEMAS)
def test_package_schema_random_records_match_fastavro(file_name: str) -> None:
    schema = load_schema(file_name)
    records = RandomRecords(schema, seed=PACKAGE_SCHEMAS.index(file_name))
    assert_same_bytes(schema, records, RECORDS_PER_SCHEMA)


def test_edge_schema_random_records_match_fastavro() -> None:
    assert_same_bytes(EDGE_SCHEMA, RandomRecords(EDGE_SCHEMA, seed=7), 1000)


def test_every_package_schema_compiles() -> None:
    assert PACKAGE_SCHEMAS  # the glob found the files
    for file_name in PACKAGE_SCHEMAS:
        compile_writer(load_schema(file_name), fallback=False)


# Values that are not what the schema says: both writers must refuse them, or write the same bytes
# where fastavro is lenient (a float for a long, a numeric string for a double field, any truthy
# value for a boolean...).
ODD_VALUES = (
    None,
    1,
    1.7,
    -2.5,
    math.nan,
    math.inf,
    "s",
    "1.5",
    b"b",
    bytearray(b"ab"),
    True,
    [],
    ["x"],
    {},
    {"a": 1},
    ("string", "x"),
    ("test.A", {"a": 1}),
    ("nope", 1),
    2**63,
    -(2**63) - 1,
    2**70,
    Decimal("2.5"),
    datetime(2024, 1, 1, tzinfo=UTC),
    date(2024, 1, 1),
    array.array("B", [1, 2]),
    array.array("b", [1, 2]),
    object(),
)


def outcome(write: Any, record: Any) -> bytes | str:
    try:
        buf = bytearray()
        write(buf, record)
        return bytes(buf)
    except Exception:
        return "refused"


def fields_of(value: Any) -> list[tuple[dict[str, Any], str]]:
    """Every (record dict, key) in a random record, nested ones included."""
    found: list[tuple[dict[str, Any], str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((value, key))
            found.extend(fields_of(item))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(fields_of(item))
    return found


@pytest.mark.parametrize("schema", [*PACKAGE_SCHEMAS, "edge"])
def test_odd_values_get_the_same_outcome_as_fastavro(schema: str) -> None:
    raw = EDGE_SCHEMA if schema == "edge" else load_schema(schema)
    records = RandomRecords(raw, seed=11)
    write = compile_writer(raw, fallback=False)

    def oracle(buf: bytearray, record: Any) -> None:
        buf += fastavro_bytes(records.schema, record)

    rng = random.Random(3)
    for _ in range(RECORDS_PER_SCHEMA):
        record = records.record()
        places = fields_of(record)
        if not places:
            continue
        holder, key = rng.choice(places)
        holder[key] = rng.choice(ODD_VALUES)
        if rng.random() < 0.2:  # a required field or a nested record's field goes missing
            holder, key = rng.choice(places)
            holder.pop(key, None)
        assert outcome(write, record) == outcome(oracle, record), repr(record)[:2000]


def test_lenient_values_match_fastavro() -> None:
    schema = {
        "type": "record",
        "name": "Lenient",
        "fields": [
            {"name": "l", "type": "long"},
            {"name": "i", "type": "int"},
            {"name": "d", "type": "double"},
            {"name": "f", "type": "float"},
            {"name": "b", "type": "boolean"},
            {"name": "m", "type": {"type": "map", "values": "double"}},
            {"name": "a", "type": {"type": "array", "items": "string"}},
            {"name": "raw", "type": "bytes"},
        ],
    }
    record = {
        "l": 1.7,  # truncated, as by fastavro's C conversion
        "i": 2**40,  # no 32-bit range check in fastavro's writer
        "d": "1.5",  # float() of the field value
        "f": 1e39,  # beyond float: inf
        "b": "yes",  # truthiness
        "m": {"x": 1, "y": True},
        "a": "ab",  # iterated: ["a", "b"]
        "raw": memoryview(b"abc"),
    }
    assert compiled_bytes(schema, record) == fastavro_bytes(schema, record)


def test_missing_fields_take_defaults_as_in_fastavro() -> None:
    record = {"i": 1, "f": 0.5, "raw": b"", "fx": b"1234", "color": "red", "mixed": None, "float_first": 1.0}
    record |= {"enum_first": "x", "array_first": [], "nested": {}, "grid": [], "plain_double": 2.0}
    record |= {"nothing": None, "nulls": [None, None], "when": 0, "wide": 2**64}
    assert compiled_bytes(EDGE_SCHEMA, record) == fastavro_bytes(EDGE_SCHEMA, record)
    with pytest.raises(ValueError, match="no value and no default for i"):
        compiled_bytes(EDGE_SCHEMA, {k: v for k, v in record.items() if k != "i"})


def serde_for(schema: dict[str, Any]) -> AvroSerde:
    catalogue = LocalCatalogue()
    catalogue.add(schema)
    return AvroSerde(catalogue, "test-value", schema)


def classified() -> dict[str, Any]:
    created = datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
    return {
        "id": "item-1",
        "item": {"id": "item-1", "name": "Болт М8", "full_name": "Болт М8х40", "created_at": created},
        "label": "product",
        "confidence": 0.875,
        "probabilities": {"product": 0.875, "service": 0.125},
        "top_k": [{"label": "product", "probability": 0.875}, {"label": "service", "probability": 0.125}],
        "explanation": [{"token": "болт", "weight": 1.5}, {"token": "🔩", "weight": -0.25}],
        "model_version": "m-1",
        "featurizer_version": "f-1",
        "warnings": [{"field": "region", "code": "missing", "message": "no region"}],
        "source": {"topic": "nomenclature.raw", "partition": 3, "offset": 2**40, "timestamp": None},
        "classified_at": created + timedelta(seconds=1),
    }


@pytest.mark.parametrize("validate", [True, False])
def test_serde_encode_is_the_header_and_fastavro_bytes(validate: bool) -> None:
    serde = AvroSerde(LocalCatalogue(), "nomenclature.classified-value", CLASSIFIED_SCHEMA)
    record = classified()
    millis = copy.deepcopy(record)
    millis["item"]["created_at"] = 1_709_296_215_123
    millis["classified_at"] = 1_709_296_216_123
    expected = serde.encode(record, validate=validate)
    assert expected[5:] == fastavro_bytes(CLASSIFIED_SCHEMA, millis)
    assert expected[:5] == b"\x00" + serde.schema_id.to_bytes(4, "big")
    assert serde.decode(expected)["item"]["created_at"] == record["item"]["created_at"]


def _set(path: str, value: Any) -> dict[str, Any]:
    record = classified()
    *parents, last = path.split(".")
    holder: Any = record
    for part in parents:
        holder = holder[int(part)] if isinstance(holder, list) else holder[part]
    holder[last] = value
    return record


def _without(path: str) -> dict[str, Any]:
    record = classified()
    *parents, last = path.split(".")
    holder: Any = record
    for part in parents:
        holder = holder[int(part)] if isinstance(holder, list) else holder[part]
    del holder[last]
    return record


WRONG_RECORDS = {
    "int for a string": _set("id", 5),
    "non-numeric string for a double": _set("confidence", "abc"),
    "None for a double": _set("confidence", None),
    "missing required field": _without("label"),
    "missing nested required field": _without("source.topic"),
    "int in a nullable string": _set("item.name", 5),
    "bytes in a nullable string": _set("item.name", b"x"),
    "string in a map of doubles": _set("probabilities", {"product": "x"}),
    "None for an array": _set("top_k", None),
    "not a record in an array": _set("top_k", [5]),
    "long out of range": _set("source.offset", 2**64),
    "float for a nullable timestamp": _set("source.timestamp", 1.5),
    "string for a timestamp": _set("classified_at", "yesterday"),
    "missing field of an array item": _without("warnings.0.code"),
    "lone surrogate": _set("model_version", "\ud800"),
    "record is a list": _set("source", ["topic"]),
}


@pytest.mark.parametrize("case", WRONG_RECORDS)
def test_wrong_types_raise_value_error(case: str) -> None:
    serde = AvroSerde(LocalCatalogue(), "nomenclature.classified-value", CLASSIFIED_SCHEMA)
    record = WRONG_RECORDS[case]
    with pytest.raises(Exception):  # noqa: B017 - the oracle refuses it too, whatever its class
        fastavro_bytes(CLASSIFIED_SCHEMA, record)
    with pytest.raises(ValueError, match=r"record does not fit Avro schema nomenclature\.ClassifiedItem"):
        serde.encode(record, validate=False)


def test_unknown_enum_symbol_raises_value_error() -> None:
    schema = load_schema("drift_alert")
    serde = AvroSerde(LocalCatalogue(), "nomenclature.drift-value", schema)
    record = RandomRecords(schema, seed=1).record()
    record["metric"] = "chi2"
    with pytest.raises(ValueError, match=r"record does not fit Avro schema nomenclature\.DriftAlert"):
        serde.encode(record, validate=False)


def logical_record(n: int) -> dict[str, Any]:
    return {
        "price": Decimal(f"{n}.25"),
        "uid": uuid.UUID(int=n * 7919),
        "day": date(2024, 1, 1) + timedelta(days=n) if n % 3 else None,
        "at": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(milliseconds=n),
        "note": "заметка" if n % 2 else None,
    }


def test_unsupported_logical_type_falls_back_to_fastavro() -> None:
    with pytest.raises(UnsupportedSchemaError, match="decimal"):
        compile_writer(LOGICAL_SCHEMA, fallback=False)
    write = compile_writer(LOGICAL_SCHEMA)
    serde = serde_for(LOGICAL_SCHEMA)
    for n in range(50):
        record = logical_record(n)
        buf = bytearray()
        write(buf, record)
        assert bytes(buf) == fastavro_bytes(LOGICAL_SCHEMA, record)
        assert serde.encode(record, validate=False)[5:] == fastavro_bytes(LOGICAL_SCHEMA, record)
    with pytest.raises(ValueError, match=r"record does not fit Avro schema test\.Logical"):
        serde.encode({**logical_record(1), "uid": 5}, validate=False)


def test_unknown_logical_type_is_compiled_as_its_base_type() -> None:
    schema = {
        "type": "record",
        "name": "Odd",
        "fields": [{"name": "s", "type": {"type": "string", "logicalType": "odd"}}],
    }
    assert compiled_bytes(schema, {"s": "ß"}) == fastavro_bytes(schema, {"s": "ß"})


def test_non_record_schemas() -> None:
    for schema, value in (
        ("string", "Привет"),
        ({"type": "array", "items": "long"}, [1, -(2**63)]),
        (["null", "double"], 2),
        ({"type": "map", "values": ["null", "boolean"]}, {"k": True, "n": None}),
    ):
        assert compiled_bytes(schema, value) == fastavro_bytes(schema, value)
