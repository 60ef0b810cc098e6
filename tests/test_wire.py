"""Confluent wire format, decode error codes, schema resolution and the local catalogue."""

from __future__ import annotations

import copy
import io
import json
import pickle
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.validation import validate as fastavro_validate

from schemas import (
    CLASSIFIED_SCHEMA,
    DECODE_ERROR_CODES,
    ITEM_SCHEMA,
    REJECTED_SCHEMA,
    AvroSerde,
    DecodeError,
    LocalCatalogue,
    RegistryCatalogue,
    SchemaNotInCatalogueError,
    UnknownSchemaIdError,
    catalogue_from_url,
    load_schema,
    to_millis,
)
from schemas.validation import Invalid, compile_validator

SUBJECT = "nomenclature.raw-value"
CREATED = datetime(2024, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)

ITEM = {
    "id": "item-1",
    "name": "Болт М8",
    "full_name": "Болт М8х40 оцинкованный",
    "kind": "Товар",
    "unit": "шт",
    "type_hint": None,
    "okved_code": "25.94",
    "hs_code": "7318158100",
    "country": "RU",
    "region": None,
    "source": "erp",
    "created_at": CREATED,
    "label": "product",
}
SOURCE = {"topic": "nomenclature.raw", "partition": 3, "offset": 2**40, "timestamp": CREATED}
CLASSIFIED = {
    "id": "item-1",
    "item": ITEM,
    "label": "product",
    "confidence": 0.875,
    "probabilities": {"product": 0.875, "service": 0.125},
    "top_k": [{"label": "product", "probability": 0.875}, {"label": "service", "probability": 0.125}],
    "explanation": [{"token": "болт", "weight": 1.5}, {"token": "м8", "weight": -0.25}],
    "model_version": "m-1",
    "featurizer_version": "f-1",
    "warnings": [{"field": "region", "code": "missing", "message": "no region"}],
    "source": SOURCE,
    "classified_at": CREATED + timedelta(seconds=1),
}
REJECTED = {
    "key": b"item-1",
    "value": b"\x01garbage\xff",
    "item_id": None,
    "source": {**SOURCE, "timestamp": None},
    "stage": "decode",
    "errors": [{"field": "", "code": "bad_magic_byte", "message": "first byte is 0x01"}],
    "rejected_at": CREATED,
}

# An item producer one schema version behind (id and name only) and one ahead (a new "brand"
# field with a default, fields in another order).
OLD_ITEM_SCHEMA = {
    "type": "record",
    "name": "NomenclatureItem",
    "namespace": "nomenclature",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "name", "type": ["null", "string"], "default": None},
    ],
}
NEW_ITEM_SCHEMA = copy.deepcopy(ITEM_SCHEMA)
NEW_ITEM_SCHEMA["fields"] = [
    {"name": "brand", "type": "string", "default": ""},
    *reversed(NEW_ITEM_SCHEMA["fields"]),
]


def header(schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big")


def avro_body(schema: Mapping[str, Any], record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(dict(schema)), dict(record))
    return buf.getvalue()


@pytest.fixture
def catalogue() -> LocalCatalogue:
    return LocalCatalogue()


@pytest.fixture
def items(catalogue: LocalCatalogue) -> AvroSerde:
    return AvroSerde(catalogue, SUBJECT, ITEM_SCHEMA)


def decode_error(serde: AvroSerde, data: bytes | None) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        serde.decode(data)
    assert info.value.code in DECODE_ERROR_CODES
    assert str(info.value) == info.value.message
    return info.value


# -- round trips and framing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "record", "schema_id"),
    [(ITEM_SCHEMA, ITEM, 1), (CLASSIFIED_SCHEMA, CLASSIFIED, 2), (REJECTED_SCHEMA, REJECTED, 3)],
    ids=["item", "classified", "rejected"],
)
def test_round_trip(catalogue: LocalCatalogue, schema: dict, record: dict, schema_id: int) -> None:
    serde = AvroSerde(catalogue, "any-subject", schema)
    data = serde.encode(record)
    assert data[:5] == header(schema_id)
    assert serde.decode(data) == record


def test_round_trip_of_an_item_with_nulls_and_missing_optional_fields(items: AvroSerde) -> None:
    decoded = items.decode(items.encode({"id": "x", "name": None}))
    assert decoded == {field["name"]: None for field in ITEM_SCHEMA["fields"]} | {"id": "x"}


def test_framing_is_magic_zero_then_big_endian_id_then_plain_avro() -> None:
    serde = AvroSerde(LocalCatalogue({0x01020304: ITEM_SCHEMA}), SUBJECT, ITEM_SCHEMA)
    data = serde.encode(ITEM)
    assert data[:5] == b"\x00\x01\x02\x03\x04"
    assert data[5:] == avro_body(ITEM_SCHEMA, ITEM)
    assert serde.schema_id == 0x01020304


def test_timestamps_accept_epoch_millis_and_datetimes_in_any_zone(items: AvroSerde) -> None:
    millis = 1_709_296_215_123
    plus3 = timezone(timedelta(hours=3))
    variants = [millis, CREATED, CREATED.astimezone(plus3), CREATED.replace(tzinfo=None)]
    encoded = {items.encode({**ITEM, "created_at": value}) for value in variants}
    assert len(encoded) == 1
    decoded = items.decode(encoded.pop())["created_at"]
    assert decoded == CREATED
    assert decoded.tzinfo is not None and decoded.utcoffset() == timedelta(0)


def test_naive_datetimes_are_utc_whatever_the_local_zone(items: AvroSerde, monkeypatch) -> None:
    naive = CREATED.replace(tzinfo=None)
    monkeypatch.setenv("TZ", "Asia/Vladivostok")
    time.tzset()
    try:
        data = items.encode({**ITEM, "created_at": naive})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert items.decode(data)["created_at"] == CREATED


def test_to_millis() -> None:
    assert to_millis(None) is None
    assert to_millis(5) == 5
    assert to_millis(datetime(1970, 1, 1, 0, 0, 1, 999999, tzinfo=UTC)) == 1999
    assert to_millis(datetime(1970, 1, 2)) == 86_400_000
    assert to_millis(datetime(1970, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))) == 0
    for bad in (True, 1.5, "2024-01-01"):
        with pytest.raises(TypeError):
            to_millis(bad)  # type: ignore[arg-type]


def test_nested_timestamps_are_converted(catalogue: LocalCatalogue) -> None:
    serde = AvroSerde(catalogue, "s", CLASSIFIED_SCHEMA)
    as_millis = {
        **CLASSIFIED,
        "item": {**ITEM, "created_at": to_millis(CREATED)},
        "source": {**SOURCE, "timestamp": to_millis(CREATED)},
        "classified_at": to_millis(CLASSIFIED["classified_at"]),
    }
    assert serde.encode(CLASSIFIED) == serde.encode(as_millis)


def test_load_schema() -> None:
    assert load_schema("nomenclature_item") == ITEM_SCHEMA
    assert load_schema("classified_item.avsc")["name"] == "ClassifiedItem"
    assert REJECTED_SCHEMA["name"] == "RejectedRecord"


# -- encode validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"label": None}, "label: expected string, got NoneType"),
        ({"confidence": "high"}, "confidence: expected double"),
        ({"probabilities": {"product": "x"}}, "probabilities.['product']: expected double"),
        ({"top_k": [{"label": "product"}]}, "top_k.[0].probability: expected double"),
        ({"item": {**ITEM, "name": 7}}, "item.name: expected null or string, got int 7"),
        ({"item": {**ITEM, "created_at": "2024"}}, "item.created_at: expected null or timestamp-millis"),
        ({"source": {**SOURCE, "partition": 1.5}}, "source.partition: expected int (32-bit)"),
        ({"source": {**SOURCE, "partition": 2**31}}, "source.partition: expected int (32-bit)"),
        ({"source": {**SOURCE, "offset": True}}, "source.offset: expected long"),
        ({"warnings": "none"}, "warnings: expected an array"),
    ],
)
def test_encode_rejects_what_does_not_fit(catalogue: LocalCatalogue, change: dict, expected: str) -> None:
    serde = AvroSerde(catalogue, "s", CLASSIFIED_SCHEMA)
    with pytest.raises(ValueError) as info:
        serde.encode({**CLASSIFIED, **change})
    assert "nomenclature.ClassifiedItem" in str(info.value)
    assert expected in str(info.value)


def test_encode_requires_fields_without_default_and_ignores_unknown_keys(items: AvroSerde) -> None:
    with pytest.raises(ValueError, match="id: expected string, got NoneType"):
        items.encode({"name": "x"})
    assert items.decode(items.encode({"id": "x", "colour": "red"}))["id"] == "x"


def test_validator_agrees_with_fastavro() -> None:
    """Our compiled validator accepts exactly what fastavro.validate accepts."""
    rng = random.Random(11)
    pool: list[Any] = [None, "x", 0, -1, 2**31, 2**63, 1.5, True, b"b", [], {}, CREATED, {"a": 1.0}]
    for schema, record in ((ITEM_SCHEMA, ITEM), (CLASSIFIED_SCHEMA, CLASSIFIED), (REJECTED_SCHEMA, REJECTED)):
        ours, parsed = compile_validator(schema), parse_schema(schema)
        for _ in range(400):
            mutated = _mutate(copy.deepcopy(record), rng, rng.choice(pool))
            try:
                ours(mutated)
                accepted = True
            except Invalid:
                accepted = False
            assert accepted == fastavro_validate(mutated, parsed, raise_errors=False), mutated


def _mutate(value: Any, rng: random.Random, new: Any) -> Any:
    """Replace one randomly chosen node (or delete one record key) in a nested structure."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        if rng.random() < 0.1:
            del value[key]
        else:
            value[key] = _mutate(value[key], rng, new)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        value[index] = _mutate(value[index], rng, new)
        return value
    return new


# -- decode errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, b""])
def test_empty_payload(items: AvroSerde, data: bytes | None) -> None:
    assert decode_error(items, data).code == "empty_payload"


def test_random_bytes_have_a_bad_magic_byte(items: AvroSerde) -> None:
    data = random.Random(3).randbytes(40)
    assert data[0] != 0
    error = decode_error(items, data)
    assert error.code == "bad_magic_byte"
    assert f"0x{data[0]:02x}" in error.message


@pytest.mark.parametrize("data", [b'{"id": "x"}', b"\x01" + header(1)[1:] + avro_body(ITEM_SCHEMA, ITEM)])
def test_bad_magic_byte(items: AvroSerde, data: bytes) -> None:
    error = decode_error(items, data)
    assert error.code == "bad_magic_byte"
    assert f"0x{data[0]:02x}" in error.message


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x00\x00\x01"])
def test_truncated_header(items: AvroSerde, data: bytes) -> None:
    assert decode_error(items, data).code == "truncated_header"


def test_unknown_schema_id(items: AvroSerde) -> None:
    error = decode_error(items, header(4242) + avro_body(ITEM_SCHEMA, ITEM))
    assert error.code == "unknown_schema_id"
    assert "4242" in error.message
    assert error.schema_id == 4242


def test_every_truncation_of_a_record_is_truncated_avro(catalogue: LocalCatalogue) -> None:
    for schema, record in ((ITEM_SCHEMA, ITEM), (CLASSIFIED_SCHEMA, CLASSIFIED)):
        serde = AvroSerde(catalogue, "s", schema)
        data = serde.encode(record)
        for end in range(5, len(data)):
            assert decode_error(serde, data[:end]).code == "truncated_avro", end


# The item record by hand: id "a1", then one byte per remaining field, each a union branch index
# (0 = null). Strings are a zigzag-varint length (0x04 = 2) and the UTF-8 bytes.
ID_A1 = b"\x04a1"
ELEVEN_NULLS = b"\x00" * 11


def test_invalid_utf8_in_the_name(items: AvroSerde) -> None:
    assert items.decode(header(1) + ID_A1 + b"\x02\x04ok" + ELEVEN_NULLS)["name"] == "ok"
    error = decode_error(items, header(1) + ID_A1 + b"\x02\x04\xff\xfe" + ELEVEN_NULLS)
    assert error.code == "invalid_utf8"


def test_bad_union_index(items: AvroSerde) -> None:
    error = decode_error(items, header(1) + ID_A1 + b"\x06" + ELEVEN_NULLS)  # branch 3 of 2
    assert error.code == "malformed_avro"


def test_negative_string_length(items: AvroSerde) -> None:
    error = decode_error(items, header(1) + b"\x03a1" + b"\x00" * 12)  # length -2
    assert error.code == "malformed_avro"
    assert "negative length" in error.message


def test_timestamp_out_of_datetime_range(items: AvroSerde) -> None:
    huge = b"\x02" + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"  # branch 1, 2**62
    error = decode_error(items, header(1) + ID_A1 + b"\x00" * 10 + huge + b"\x00")
    assert error.code == "malformed_avro"


def test_trailing_bytes(items: AvroSerde) -> None:
    error = decode_error(items, items.encode(ITEM) + b"\x00\x00")
    assert error.code == "trailing_bytes"
    assert "2 bytes" in error.message


@pytest.mark.parametrize(
    "writer",
    [
        {**OLD_ITEM_SCHEMA, "fields": [{"name": "id", "type": "int"}]},  # id of another type
        {**OLD_ITEM_SCHEMA, "fields": [OLD_ITEM_SCHEMA["fields"][1]]},  # no id, reader has no default
        {**OLD_ITEM_SCHEMA, "name": "Product"},  # another record
    ],
    ids=["type", "missing-field", "name"],
)
def test_incompatible_writer_schema(catalogue: LocalCatalogue, items: AvroSerde, writer: dict) -> None:
    writer_id = catalogue.add(writer)
    record = {"id": 7} if writer["fields"][0]["type"] == "int" else {"id": "a", "name": "b"}
    error = decode_error(items, header(writer_id) + avro_body(writer, record))
    assert error.code == "incompatible_schema"
    assert len(error.message) < 500


def test_writer_schema_that_is_not_avro(items: AvroSerde) -> None:
    class Broken(LocalCatalogue):
        def schema_for(self, schema_id: int) -> dict:
            return {"type": "record", "name": "X", "fields": [{"name": "a", "type": "no-such-type"}]}

    serde = AvroSerde(Broken(), SUBJECT, ITEM_SCHEMA)
    assert decode_error(serde, header(9) + b"\x00").code == "incompatible_schema"


def test_decode_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(DecodeError("trailing_bytes", "2 bytes after", 1)))
    assert (error.code, error.message, error.schema_id) == ("trailing_bytes", "2 bytes after", 1)
    assert str(error) == "2 bytes after"


def test_fuzzed_payloads_decode_or_raise_decode_error(catalogue: LocalCatalogue) -> None:
    rng = random.Random(5)
    serde = AvroSerde(catalogue, "s", CLASSIFIED_SCHEMA)
    valid = serde.encode(CLASSIFIED)
    codes = set()
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(5, len(data))] = rng.randrange(256)
        try:
            serde.decode(bytes(data))
        except DecodeError as exc:
            codes.add(exc.code)
    assert {"truncated_avro", "trailing_bytes", "malformed_avro"} <= codes


# -- schema resolution ------------------------------------------------------------------------


def test_older_and_newer_producers_decode_into_the_current_schema(catalogue: LocalCatalogue) -> None:
    old_id, new_id = catalogue.add(OLD_ITEM_SCHEMA), catalogue.add(NEW_ITEM_SCHEMA)
    assert len({1, old_id, new_id}) == 3
    reader = AvroSerde(catalogue, SUBJECT, ITEM_SCHEMA)

    old_data = AvroSerde(catalogue, SUBJECT, OLD_ITEM_SCHEMA).encode({"id": "o1", "name": "Гайка"})
    assert old_data[:5] == header(old_id)
    expected_old = {field["name"]: None for field in ITEM_SCHEMA["fields"]} | {"id": "o1", "name": "Гайка"}
    assert reader.decode(old_data) == expected_old

    new_data = AvroSerde(catalogue, SUBJECT, NEW_ITEM_SCHEMA).encode({**ITEM, "brand": "ACME"})
    assert new_data[:5] == header(new_id)
    assert reader.decode(new_data) == ITEM  # "brand" dropped; key order is the writer's


def test_writer_schemas_are_fetched_once_per_id() -> None:
    class Counting(LocalCatalogue):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        def schema_for(self, schema_id: int) -> dict:
            self.calls.append(schema_id)
            return super().schema_for(schema_id)

    catalogue = Counting()
    old_id = catalogue.add(OLD_ITEM_SCHEMA)
    serde = AvroSerde(catalogue, SUBJECT, ITEM_SCHEMA)
    current, old = serde.encode(ITEM), header(old_id) + avro_body(OLD_ITEM_SCHEMA, {"id": "o"})
    for _ in range(50):
        serde.decode(current)
        serde.decode(old)
    for _ in range(3):
        decode_error(serde, header(99) + b"\x00")
    assert sorted(catalogue.calls) == [1, old_id, 99, 99, 99]  # unknown ids: the catalogue's cache


def test_decode_overhead_over_fastavro_is_small(items: AvroSerde) -> None:
    from fastavro import schemaless_reader

    data = items.encode(ITEM)
    parsed = parse_schema(ITEM_SCHEMA)

    def best(fn) -> float:
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                fn()
            runs.append(time.perf_counter() - start)
        return min(runs)

    ours = best(lambda: items.decode(data))
    raw = best(lambda: schemaless_reader(io.BytesIO(data[5:]), parsed, None))
    assert ours < raw * 2 + 0.005, (ours, raw)


# -- catalogues -------------------------------------------------------------------------------


def test_local_catalogue_ids_come_from_catalogue_json(catalogue: LocalCatalogue) -> None:
    assert catalogue.id_for("a", ITEM_SCHEMA) == catalogue.id_for("b", ITEM_SCHEMA) == 1
    assert catalogue.id_for("a", CLASSIFIED_SCHEMA) == 2
    assert catalogue.id_for("a", REJECTED_SCHEMA) == 3
    assert catalogue.schema_for(3) == REJECTED_SCHEMA
    reordered = json.loads(json.dumps(ITEM_SCHEMA, sort_keys=True))
    assert catalogue.id_for("a", reordered) == 1


def test_local_catalogue_errors(catalogue: LocalCatalogue) -> None:
    with pytest.raises(SchemaNotInCatalogueError, match=r"nomenclature.NomenclatureItem .*known ids: 1="):
        catalogue.id_for(SUBJECT, OLD_ITEM_SCHEMA)
    with pytest.raises(KeyError) as info:
        catalogue.schema_for(77)
    assert isinstance(info.value, UnknownSchemaIdError)
    assert str(info.value) == "unknown schema id 77: not in the local catalogue"
    with pytest.raises(ValueError, match="already used"):
        catalogue.add(OLD_ITEM_SCHEMA, 1)
    with pytest.raises(ValueError, match="already in the catalogue as id 1"):
        catalogue.add(ITEM_SCHEMA, 9)
    assert catalogue.add(ITEM_SCHEMA) == 1
    assert catalogue.add(OLD_ITEM_SCHEMA, 300) == 300


def test_schema_for_returns_a_copy(catalogue: LocalCatalogue) -> None:
    catalogue.schema_for(1)["fields"].clear()
    assert catalogue.schema_for(1) == ITEM_SCHEMA


def test_catalogue_from_url() -> None:
    assert isinstance(catalogue_from_url(None), LocalCatalogue)
    assert isinstance(catalogue_from_url(""), LocalCatalogue)
    remote = catalogue_from_url("http://user:secret@registry:8081/")
    assert isinstance(remote, RegistryCatalogue)
    assert remote.base_url == "http://registry:8081"
    assert "secret" not in repr(remote)
    with pytest.raises(ValueError):
        RegistryCatalogue("registry:8081")

