"""Schema catalogues: which schema id stands for which Avro schema.

``LocalCatalogue`` reads the fixed ids of ``schemas/catalogue.json``; ``RegistryCatalogue`` asks a
Confluent-compatible schema registry. ``catalogue_from_url`` picks one from the settings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Protocol

from schemas.avsc import SCHEMA_DIR, Schema, canonical_json, full_name, load_schema
from schemas.errors import RegistryError, SchemaNotInCatalogueError, UnknownSchemaIdError
from schemas.registry_client import RegistryCatalogue

__all__ = [
    "Catalogue",
    "LocalCatalogue",
    "RegistryCatalogue",
    "RegistryError",
    "SchemaNotInCatalogueError",
    "UnknownSchemaIdError",
    "catalogue_from_url",
    "load_catalogue",
]

CATALOGUE_FILE = SCHEMA_DIR / "catalogue.json"


class Catalogue(Protocol):
    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int:
        """The id of ``schema`` (registering it under ``subject`` where the catalogue does that)."""
        ...

    def schema_for(self, schema_id: int) -> Schema:
        """The schema stored under ``schema_id``; raises ``UnknownSchemaIdError`` (a KeyError)."""
        ...


def load_catalogue() -> dict[int, Schema]:
    """The ids and schemas listed in ``schemas/catalogue.json`` (``{"<id>": "<file>.avsc"}``)."""
    with CATALOGUE_FILE.open(encoding="utf-8") as fh:
        entries = json.load(fh)
    return {int(schema_id): load_schema(file_name) for schema_id, file_name in entries.items()}


class LocalCatalogue:
    """Fixed schema ids, by default those of ``schemas/catalogue.json``. Subjects are ignored.

    ``add`` puts further schemas in (e.g. an older producer's schema in tests); a schema is
    matched by the equality of its parsed JSON, so whitespace and key order do not matter.
    """

    def __init__(self, schemas: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        self._by_id: dict[int, Schema] = {}
        self._by_text: dict[str, int] = {}
        for schema_id, schema in (load_catalogue() if schemas is None else schemas).items():
            self.add(schema, schema_id)

    def __repr__(self) -> str:
        return f"LocalCatalogue({sorted(self._by_id)})"

    def add(self, schema: Mapping[str, Any], schema_id: int | None = None) -> int:
        """Add ``schema`` under ``schema_id`` (default: the next free id) and return its id."""
        text = canonical_json(schema)
        existing = self._by_text.get(text)
        if existing is not None and schema_id in (None, existing):
            return existing
        if existing is not None:
            raise ValueError(f"schema {full_name(schema)} is already in the catalogue as id {existing}")
        if schema_id is None:
            schema_id = max(self._by_id, default=0) + 1
        elif schema_id in self._by_id:
            raise ValueError(f"schema id {schema_id} is already used by {full_name(self._by_id[schema_id])}")
        self._by_id[schema_id] = copy.deepcopy(dict(schema))
        self._by_text[text] = schema_id
        return schema_id

    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int:
        schema_id = self._by_text.get(canonical_json(schema))
        if schema_id is None:
            known = ", ".join(f"{i}={full_name(s)}" for i, s in sorted(self._by_id.items()))
            raise SchemaNotInCatalogueError(
                f"schema {full_name(schema)} (subject {subject!r}) is not in the local catalogue "
                f"{CATALOGUE_FILE.name} (known ids: {known})"
            )
        return schema_id

    def schema_for(self, schema_id: int) -> Schema:
        schema = self._by_id.get(schema_id)
        if schema is None:
            raise UnknownSchemaIdError(schema_id, "not in the local catalogue")
        return copy.deepcopy(schema)


def catalogue_from_url(url: str | None, timeout: float = 5) -> Catalogue:
    """``RegistryCatalogue(url)`` when a registry URL is set, else the local catalogue."""
    if url is not None and url.strip():
        return RegistryCatalogue(url, timeout=timeout)
    return LocalCatalogue()
