"""Typed, flattened Arrow columns for the records of an Avro schema (what the parquet sink writes).

Mapping, chosen for what pyarrow, pandas, DuckDB and Spark users query most easily:

- the top-level record's fields are columns; a field holding a record (or a nullable one) is flattened
  into ``<field>_<subfield>`` columns, recursively (``item_name``, ``source_offset``); every column is
  nullable (a null record gives nulls in all of its columns, and a field may become optional later);
- records inside arrays and maps become structs, arrays lists, maps ``map<string, …>``
  (``probabilities['product']`` in DuckDB, ``pyarrow.compute.map_lookup`` in pyarrow, a list of
  (key, value) pairs in pandas);
- ``["null", X]`` is a nullable X; a union of several non-null branches is JSON text;
- int → int32, long → int64, float → float32, double → float64, boolean → bool, string and enum →
  string, bytes and fixed → binary; timestamp-millis / -micros → timestamp(ms / us, UTC),
  date → date32, time-millis → time32(ms), time-micros → time64(us), decimal → decimal128.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa

_PRIMITIVES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_LOGICAL: dict[tuple[str, str], pa.DataType] = {
    ("long", "timestamp-millis"): pa.timestamp("ms", tz="UTC"),
    ("long", "timestamp-micros"): pa.timestamp("us", tz="UTC"),
    ("long", "local-timestamp-millis"): pa.timestamp("ms"),
    ("long", "local-timestamp-micros"): pa.timestamp("us"),
    ("int", "date"): pa.date32(),
    ("int", "time-millis"): pa.time32("ms"),
    ("long", "time-micros"): pa.time64("us"),
    ("string", "uuid"): pa.string(),
}


class UnsupportedSchemaError(ValueError):
    """The Avro schema cannot be laid out as columns (e.g. two fields flatten to one name)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    path: tuple[str, ...]  # field names from the top-level record down
    as_json: bool = False  # a multi-branch union: the value is written as JSON text


class RecordColumns:
    """The flattened columns of a top-level Avro record schema, and tables built from decoded records."""

    def __init__(self, schema: Mapping[str, Any], reserved: Sequence[str] = ()) -> None:
        if schema.get("type") != "record":
            raise UnsupportedSchemaError(f"expected an Avro record schema, got type {schema.get('type')!r}")
        self._named: dict[str, Any] = {}
        self.columns: list[Column] = []
        self._flatten(schema, prefix="", path=(), namespace=schema.get("namespace", ""))
        names = [c.name for c in self.columns]
        clashes = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(reserved)))
        if clashes:
            raise UnsupportedSchemaError(
                f"schema {schema.get('name')!r}: flattened column names clash: {', '.join(clashes)}"
            )

    @property
    def arrow_fields(self) -> list[pa.Field]:
        return [pa.field(c.name, c.type) for c in self.columns]

    def arrays(self, values: Sequence[Mapping[str, Any]]) -> list[pa.Array]:
        """One Arrow array per column, from records decoded by fastavro."""
        parents: dict[tuple[str, ...], list[Any]] = {(): list(values)}
        out = []
        for column in self.columns:
            records = _records_at(parents, column.path[:-1])
            name = column.path[-1]
            cells = [None if r is None else r.get(name) for r in records]
            if column.as_json:
                cells = [None if c is None else _json_text(c) for c in cells]
            out.append(pa.array(cells, type=column.type))
        return out

    # ---- schema walk ---------------------------------------------------------------------------

    def _flatten(self, schema: Mapping[str, Any], prefix: str, path: tuple[str, ...], namespace: str) -> None:
        namespace = self._register(schema, namespace)
        for field in schema.get("fields", []):
            name, kind = field["name"], field["type"]
            resolved = self._unwrap(kind, namespace)
            field_path = (*path, name)
            if isinstance(resolved, Mapping) and resolved.get("type") in ("record", "error"):
                self._flatten(resolved, f"{prefix}{name}_", field_path, namespace)
                continue
            arrow, as_json = self._arrow(resolved, namespace)
            self.columns.append(Column(f"{prefix}{name}", arrow, field_path, as_json))

    def _register(self, schema: Mapping[str, Any], namespace: str) -> str:
        name = str(schema.get("name", ""))
        if "." in name:
            namespace = name.rpartition(".")[0]
        elif schema.get("namespace") is not None:
            namespace = schema["namespace"]
        if name:
            short = name.rpartition(".")[2]
            self._named[f"{namespace}.{short}" if namespace else short] = schema
            self._named.setdefault(short, schema)
        return namespace

    def _lookup(self, kind: Any, namespace: str) -> Any:
        if isinstance(kind, str) and kind not in _PRIMITIVES:
            found = self._named.get(f"{namespace}.{kind}") or self._named.get(kind)
            if found is None:
                raise UnsupportedSchemaError(f"unknown named type {kind!r}")
            return found
        return kind

    def _unwrap(self, kind: Any, namespace: str) -> Any:
        """The non-null branch of a union with at most one; a larger union is returned as it is."""
        if isinstance(kind, list):
            branches = [b for b in kind if b != "null"]
            return self._lookup(branches[0], namespace) if len(branches) == 1 else kind
        return self._lookup(kind, namespace)

    def _arrow(self, kind: Any, namespace: str) -> tuple[pa.DataType, bool]:
        """(Arrow type, as JSON text) of an Avro type inside a column."""
        kind = self._lookup(kind, namespace)
        if isinstance(kind, list):
            resolved = self._unwrap(kind, namespace)
            if isinstance(resolved, list):
                return pa.string(), True
            return self._arrow(resolved, namespace)
        if isinstance(kind, str):
            return _PRIMITIVES[kind], False
        base = kind.get("type")
        logical = kind.get("logicalType")
        if logical == "decimal" and base in ("bytes", "fixed"):
            return pa.decimal128(int(kind["precision"]), int(kind.get("scale", 0))), False
        if isinstance(base, str) and (base, logical) in _LOGICAL:
            return _LOGICAL[(base, logical)], False
        if base in ("record", "error"):
            inner = self._register(kind, namespace)
            typed = [(f["name"], *self._arrow(f["type"], inner)) for f in kind.get("fields", [])]
            if any(as_json for _, _, as_json in typed):
                return pa.string(), True
            return pa.struct([pa.field(name, arrow) for name, arrow, _ in typed]), False
        if base == "array":
            item, as_json = self._arrow(kind["items"], namespace)
            return (pa.string(), True) if as_json else (pa.list_(item), False)
        if base == "map":
            value, as_json = self._arrow(kind["values"], namespace)
            return (pa.string(), True) if as_json else (pa.map_(pa.string(), value), False)
        if base == "enum":
            self._register(kind, namespace)
            return pa.string(), False
        if base == "fixed":
            self._register(kind, namespace)
            return pa.binary(), False
        if isinstance(base, str | list | Mapping):
            return self._arrow(base, namespace)
        raise UnsupportedSchemaError(f"unsupported Avro type {kind!r}")


def _records_at(parents: dict[tuple[str, ...], list[Any]], path: tuple[str, ...]) -> list[Any]:
    """The nested records at ``path`` of every top-level record (None where a record on the way is null),
    computed once per path."""
    found = parents.get(path)
    if found is None:
        above = _records_at(parents, path[:-1])
        name = path[-1]
        found = parents[path] = [None if r is None else r.get(name) for r in above]
    return found


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json)


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
