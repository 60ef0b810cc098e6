"""timestamp-millis on the encoding side.

fastavro turns a *naive* datetime into epoch millis with ``time.mktime``, i.e. in the machine's
local time zone, so the same record would encode differently on differently configured hosts.
We therefore convert datetimes ourselves before handing a record to fastavro, reading naive
datetimes as UTC. On the decoding side fastavro returns tz-aware UTC datetimes, which we keep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

Convert = Callable[[Any], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)


def to_millis(value: int | datetime | None) -> int | None:
    """Epoch milliseconds from an int (returned as is) or a datetime (naive = UTC); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("expected epoch milliseconds (int) or datetime, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _MILLISECOND
    raise TypeError(f"expected epoch milliseconds (int) or datetime, got {type(value).__name__}")


def timestamp_normaliser(schema: Any) -> Convert | None:
    """A function that copies a record converting every datetime in a timestamp-millis position
    to epoch millis (other values are left for validation to judge); None if the schema has no
    such position. Unions with more than one non-null branch needing conversion are left alone.
    """
    return _build(schema, "", {})


def _build(schema: Any, namespace: str, named: dict[str, Convert | None]) -> Convert | None:
    if isinstance(schema, str):
        return named.get(schema) or named.get(f"{namespace}.{schema}")
    if isinstance(schema, list):
        branches = [c for c in (_build(b, namespace, named) for b in schema) if c is not None]
        return branches[0] if len(branches) == 1 else None
    if not isinstance(schema, Mapping):
        return None
    kind = schema.get("type")
    if kind == "long" and schema.get("logicalType") == "timestamp-millis":
        return _datetime_to_millis
    if kind in ("record", "error"):
        return _build_record(schema, namespace, named)
    if kind == "array":
        return _each(_build(schema.get("items"), namespace, named))
    if kind == "map":
        return _each_value(_build(schema.get("values"), namespace, named))
    if isinstance(kind, list | Mapping):
        return _build(kind, namespace, named)
    return None


def _build_record(
    schema: Mapping[str, Any], namespace: str, named: dict[str, Convert | None]
) -> Convert | None:
    name = str(schema.get("name", ""))
    if "." in name:
        namespace = name.rpartition(".")[0]
    else:
        namespace = schema.get("namespace", namespace) or ""
    fullname = f"{namespace}.{name.rpartition('.')[2]}" if namespace else name
    named[fullname] = None  # a recursive reference is not converted
    fields = []
    for field in schema.get("fields", []):
        convert = _build(field.get("type"), namespace, named)
        if convert is not None:
            fields.append((field["name"], convert))
    record = _record(tuple(fields)) if fields else None
    named[fullname] = record
    return record


def _datetime_to_millis(value: Any) -> Any:
    return to_millis(value) if isinstance(value, datetime) else value


def _record(fields: tuple[tuple[str, Convert], ...]) -> Convert:
    def convert(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out = dict(value)
        for name, convert_field in fields:
            if name in out:
                out[name] = convert_field(out[name])
        return out

    return convert


def _each(convert: Convert | None) -> Convert | None:
    if convert is None:
        return None
    return lambda value: [convert(v) for v in value] if isinstance(value, list | tuple) else value


def _each_value(convert: Convert | None) -> Convert | None:
    if convert is None:
        return None
    return lambda value: {k: convert(v) for k, v in value.items()} if isinstance(value, Mapping) else value
