"""Errors of the schema catalogues (the decode errors live in ``schemas.wire``)."""

from __future__ import annotations


class UnknownSchemaIdError(KeyError):
    """The catalogue has no schema under this id (a KeyError, so ``except KeyError`` catches it)."""

    def __init__(self, schema_id: int, detail: str = "") -> None:
        super().__init__(schema_id)
        self.schema_id = schema_id
        self.message = f"unknown schema id {schema_id}" + (f": {detail}" if detail else "")

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return self.message


class SchemaNotInCatalogueError(LookupError):
    """``id_for`` was asked for a schema the catalogue does not hold (and may not register)."""


class RegistryError(RuntimeError):
    """The schema registry could not be reached or answered with an unexpected error.

    Not a KeyError/ValueError on purpose: an unreachable registry says nothing about the record
    being decoded, so it must not send records to the dead-letter topic.
    """

    def __init__(
        self, url: str, message: str, status: int | None = None, error_code: int | None = None
    ) -> None:
        parts = [f"schema registry request {url} failed"]
        if status is not None:
            parts.append(f"HTTP {status}")
        if error_code is not None:
            parts.append(f"error_code {error_code}")
        super().__init__(", ".join(parts) + f": {message}")
        self.url = url
        self.status = status
        self.error_code = error_code
        self.registry_message = message
