"""Byte compatibility with confluent-kafka's Avro serdes, and RegistryCatalogue against the
stand-in Confluent-compatible registry of tests/schema_registry_server.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.schema_registry_client import Schema
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import (
    ITEM_SCHEMA,
    AvroSerde,
    DecodeError,
    RegistryCatalogue,
    RegistryError,
    SchemaNotInCatalogueError,
    UnknownSchemaIdError,
)
from schemas.avsc import SCHEMA_DIR
from tests.schema_registry_server import CONTENT_TYPE, SchemaRegistryServer

TOPIC = "nomenclature.raw"
SUBJECT = f"{TOPIC}-value"  # TopicNameStrategy
CONTEXT = SerializationContext(TOPIC, MessageField.VALUE)
ITEM_AVSC = (SCHEMA_DIR / "nomenclature_item.avsc").read_text(encoding="utf-8")

RECORD = {
    "id": "svc-42",
    "name": "Монтаж вентиляции",
    "full_name": "Монтаж системы вентиляции в офисе",
    "kind": "Услуга",
    "unit": "усл. ед.",
    "type_hint": None,
    "okved_code": "43.22",
    "hs_code": None,
    "country": "RU",
    "region": None,
    "source": None,
    "created_at": datetime(2023, 11, 5, 8, 0, 0, 250000, tzinfo=UTC),
    "label": None,
}
OLD_ITEM_SCHEMA = {
    "type": "record",
    "name": "NomenclatureItem",
    "namespace": "nomenclature",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "name", "type": ["null", "string"], "default": None},
    ],
}


@pytest.fixture
def registry() -> Iterator[SchemaRegistryServer]:
    with SchemaRegistryServer() as server:
        yield server


@pytest.fixture
def client(registry: SchemaRegistryServer) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url})


def ours(registry: SchemaRegistryServer, **kwargs: Any) -> AvroSerde:
    return AvroSerde(RegistryCatalogue(registry.url, **kwargs), SUBJECT, ITEM_SCHEMA)


def gets(registry: SchemaRegistryServer, path: str) -> int:
    return sum(1 for method, url in registry.requests if method == "GET" and url.split("?")[0] == path)


# -- byte compatibility -----------------------------------------------------------------------


def test_confluent_serializer_bytes_decode_with_our_serde(registry, client) -> None:
    data = AvroSerializer(client, ITEM_AVSC)(RECORD, CONTEXT)
    assert data[0] == 0
    assert ours(registry).decode(data) == RECORD


def test_our_bytes_decode_with_confluent_deserializer(registry, client) -> None:
    data = ours(registry).encode(RECORD)
    assert AvroDeserializer(client)(data, CONTEXT) == RECORD
    assert AvroDeserializer(client, ITEM_AVSC)(data, CONTEXT) == RECORD


def test_bytes_are_identical_for_the_same_record_and_schema_id(registry, client) -> None:
    theirs = AvroSerializer(client, ITEM_AVSC)(RECORD, CONTEXT)
    serde = ours(registry)
    mine = serde.encode(RECORD)
    assert mine == theirs
    # whitespace and key order of the schema text do not matter to the registry
    assert serde.schema_id == int.from_bytes(theirs[1:5], "big")
    assert registry.subjects == {SUBJECT: [serde.schema_id]}
    nulls = {"id": "x"} | {key: None for key in RECORD if key != "id"}
    assert serde.encode(nulls) == AvroSerializer(client, ITEM_AVSC)(nulls, CONTEXT)


@pytest.mark.parametrize(
    "conf",
    [{"auto.register.schemas": False}, {"auto.register.schemas": False, "use.latest.version": True}],
    ids=["lookup", "latest"],
)
def test_confluent_serializer_without_auto_register(registry, client, conf: dict) -> None:
    serde = ours(registry)
    mine = serde.encode(RECORD)  # registers the schema
    assert AvroSerializer(client, ITEM_AVSC, conf=conf)(RECORD, CONTEXT) == mine


def test_confluent_serializer_without_auto_register_fails_clearly_when_unregistered(client) -> None:
    serializer = AvroSerializer(client, ITEM_AVSC, conf={"auto.register.schemas": False})
    with pytest.raises(SchemaRegistryError) as info:
        serializer(RECORD, CONTEXT)
    assert info.value.error_code == 40401


def test_confluent_deserializer_with_latest_version_reads_an_older_writer(registry, client) -> None:
    old = AvroSerializer(client, json.dumps(OLD_ITEM_SCHEMA))({"id": "o", "name": "Гайка"}, CONTEXT)
    ours(registry).encode(RECORD)  # the current schema becomes version 2
    expected = {key: None for key in RECORD} | {"id": "o", "name": "Гайка"}
    assert AvroDeserializer(client, conf={"use.latest.version": True})(old, CONTEXT) == expected
    assert ours(registry).decode(old) == expected


def test_a_confluent_producer_on_an_older_schema_decodes_into_the_current_one(registry, client) -> None:
    data = AvroSerializer(client, json.dumps(OLD_ITEM_SCHEMA))({"id": "o1", "name": None}, CONTEXT)
    assert ours(registry).decode(data) == {key: None for key in RECORD} | {"id": "o1"}


# -- RegistryCatalogue ------------------------------------------------------------------------


def test_schema_for_is_fetched_once_per_id(registry, client) -> None:
    data = AvroSerializer(client, ITEM_AVSC)(RECORD, CONTEXT)
    schema_id = int.from_bytes(data[1:5], "big")
    catalogue = RegistryCatalogue(registry.url)
    assert catalogue.schema_for(schema_id) == ITEM_SCHEMA
    assert catalogue.schema_for(schema_id) == ITEM_SCHEMA
    serde = AvroSerde(catalogue, SUBJECT, ITEM_SCHEMA)
    for _ in range(20):
        assert serde.decode(data) == RECORD
    assert gets(registry, f"/schemas/ids/{schema_id}") == 1


def test_id_for_registers_once_and_seeds_the_schema_cache(registry) -> None:
    catalogue = RegistryCatalogue(registry.url)
    first = catalogue.id_for(SUBJECT, ITEM_SCHEMA)
    assert catalogue.id_for(SUBJECT, json.loads(ITEM_AVSC)) == first
    assert catalogue.id_for("other-value", ITEM_SCHEMA) == first  # ids are global
    assert catalogue.schema_for(first) == ITEM_SCHEMA
    posts = [url for method, url in registry.requests if method == "POST"]
    assert posts == [f"/subjects/{SUBJECT}/versions", "/subjects/other-value/versions"]
    assert gets(registry, f"/schemas/ids/{first}") == 0
    version = json.loads(urllib.request.urlopen(f"{registry.url}/subjects/{SUBJECT}/versions/1").read())
    assert json.loads(version["schema"]) == ITEM_SCHEMA


def test_unknown_ids_are_negatively_cached(registry) -> None:
    catalogue = RegistryCatalogue(registry.url, negative_ttl=0.3)
    serde = AvroSerde(catalogue, SUBJECT, ITEM_SCHEMA)
    for _ in range(10):
        with pytest.raises(DecodeError) as info:
            serde.decode(b"\x00\x00\x00\x10\x00" + b"\x02")
        assert info.value.code == "unknown_schema_id"
        assert "4096" in info.value.message
    assert gets(registry, "/schemas/ids/4096") == 1
    time.sleep(0.35)
    with pytest.raises(UnknownSchemaIdError):
        catalogue.schema_for(4096)
    assert gets(registry, "/schemas/ids/4096") == 2


def test_an_id_registered_after_a_miss_is_found_once_the_ttl_expires(registry) -> None:
    catalogue = RegistryCatalogue(registry.url, negative_ttl=0.2)
    with pytest.raises(KeyError):
        catalogue.schema_for(1)
    RegistryCatalogue(registry.url).id_for(SUBJECT, ITEM_SCHEMA)
    with pytest.raises(KeyError):
        catalogue.schema_for(1)  # still negatively cached
    time.sleep(0.25)
    assert catalogue.schema_for(1) == ITEM_SCHEMA


def test_lookup_only_mode(registry) -> None:
    catalogue = RegistryCatalogue(registry.url, auto_register=False)
    with pytest.raises(SchemaNotInCatalogueError, match=f"not registered under subject '{SUBJECT}'"):
        catalogue.id_for(SUBJECT, ITEM_SCHEMA)
    schema_id = RegistryCatalogue(registry.url).id_for(SUBJECT, ITEM_SCHEMA)
    assert catalogue.id_for(SUBJECT, ITEM_SCHEMA) == schema_id
    assert ("POST", f"/subjects/{SUBJECT}") in registry.requests


def test_registry_errors_are_clear(registry) -> None:
    catalogue = RegistryCatalogue(registry.url)
    bad = {"type": "record", "name": "Bad", "fields": [{"name": "a", "type": "nope"}]}
    with pytest.raises(RegistryError) as info:
        catalogue.id_for(SUBJECT, bad)
    error = info.value
    assert (error.status, error.error_code) == (422, 42201)
    assert f"POST {registry.url}/subjects/{SUBJECT}/versions" in str(error)
    assert "HTTP 422, error_code 42201: Invalid schema" in str(error)


def test_a_registered_schema_that_is_not_avro_is_incompatible(registry) -> None:
    registry.schemas[7] = 'syntax = "proto3"; message Item { string id = 1; }'
    catalogue = RegistryCatalogue(registry.url)
    with pytest.raises(ValueError, match="schema id 7"):
        catalogue.schema_for(7)
    serde = AvroSerde(catalogue, SUBJECT, ITEM_SCHEMA)
    for _ in range(3):
        with pytest.raises(DecodeError) as info:
            serde.decode(b"\x00\x00\x00\x00\x07\x00")
        assert info.value.code == "incompatible_schema"
    assert gets(registry, "/schemas/ids/7") == 2  # once for the catalogue call above, once for the serde


def test_unreachable_registry_is_a_registry_error_not_a_decode_error() -> None:
    with SchemaRegistryServer() as server:
        url = server.url
    serde = AvroSerde(RegistryCatalogue(url, timeout=2), SUBJECT, ITEM_SCHEMA)
    with pytest.raises(RegistryError, match=f"GET {url}/schemas/ids/1 failed: cannot connect"):
        serde.decode(b"\x00\x00\x00\x00\x01\x00")


def test_basic_auth_from_the_url() -> None:
    with SchemaRegistryServer(credentials=("svc", "p@ss:word")) as server:
        host = server.url.removeprefix("http://")
        catalogue = RegistryCatalogue(f"http://svc:p%40ss%3Aword@{host}")
        assert catalogue.id_for(SUBJECT, ITEM_SCHEMA) == 1
        assert "p%40ss" not in repr(catalogue)
        with pytest.raises(RegistryError) as info:
            RegistryCatalogue(server.url).schema_for(1)
        assert info.value.status == 401


# -- the stand-in registry itself -------------------------------------------------------------


def test_stand_in_registry_speaks_the_confluent_api(registry, client) -> None:
    schema = Schema(ITEM_AVSC, "AVRO")
    first = client.register_schema(SUBJECT, schema)
    assert client.register_schema(SUBJECT, Schema(json.dumps(ITEM_SCHEMA), "AVRO")) == first
    second = client.register_schema(SUBJECT, Schema(json.dumps(OLD_ITEM_SCHEMA), "AVRO"))
    assert client.register_schema("other-value", schema) == first
    assert client.get_subjects() == ["nomenclature.raw-value", "other-value"]
    assert client.get_versions(SUBJECT) == [1, 2]
    latest = client.get_latest_version(SUBJECT)
    assert (latest.schema_id, latest.version, latest.subject) == (second, 2, SUBJECT)
    assert client.get_version(SUBJECT, 1).schema_id == first
    assert client.lookup_schema(SUBJECT, schema).version == 1
    assert json.loads(client.get_schema(first).schema_str) == ITEM_SCHEMA
    assert client.get_compatibility() == "BACKWARD"
    client.set_compatibility(level="FULL")
    assert client.get_compatibility() == "FULL"
    for call, code in [
        (lambda: client.get_schema(999), 40403),
        (lambda: client.get_versions("nope"), 40401),
        (lambda: client.get_version(SUBJECT, 9), 40402),
        (lambda: client.lookup_schema("other-value", Schema(json.dumps(OLD_ITEM_SCHEMA), "AVRO")), 40403),
        (lambda: client.register_schema(SUBJECT, Schema('{"type": "nope"}', "AVRO")), 42201),
        (lambda: client.set_compatibility(level="SIDEWAYS"), 42203),
        (lambda: client.get_compatibility("other-value"), 40408),
    ]:
        with pytest.raises(SchemaRegistryError) as info:
            call()
        assert info.value.error_code == code


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        (f"/subjects/{SUBJECT}/versions/latest", 200, {"subject": SUBJECT, "version": 1, "id": 1}),
        (f"/subjects/{SUBJECT}/versions/abc", 422, {"error_code": 42202}),
        ("/schemas/ids/1?subject=x&fetchMaxId=false&format=", 200, {}),
        ("/schemas/ids/2", 404, {"error_code": 40403}),
        ("/no/such/path", 404, {"error_code": 404}),
    ],
)
def test_stand_in_registry_responses(registry, path: str, status: int, body: dict) -> None:
    RegistryCatalogue(registry.url).id_for(SUBJECT, ITEM_SCHEMA)
    try:
        response = urllib.request.urlopen(registry.url + path)
    except urllib.error.HTTPError as exc:
        response = exc
    assert response.status == status
    assert response.headers["Content-Type"] == CONTENT_TYPE
    payload = json.loads(response.read())
    assert payload.items() >= body.items()
    if status >= 400:
        assert isinstance(payload["message"], str)
