"""The Avro schema files of this package, loaded as parsed-JSON dicts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent

Schema = dict[str, Any]


def load_schema(name: str) -> Schema:
    """Load ``schemas/<name>.avsc`` (``name`` may also carry the ``.avsc`` suffix)."""
    file_name = name if name.endswith(".avsc") else f"{name}.avsc"
    path = SCHEMA_DIR / file_name
    if path.parent != SCHEMA_DIR:
        raise ValueError(f"not a schema name: {name!r}")
    with path.open(encoding="utf-8") as fh:
        schema = json.load(fh)
    if not isinstance(schema, dict):
        raise ValueError(f"{path}: expected a JSON object (an Avro named schema)")
    return schema


def canonical_json(schema: Mapping[str, Any] | list[Any] | str) -> str:
    """A text that is equal for equal parsed-JSON schemas, whatever their key order and whitespace.

    Not the Avro Parsing Canonical Form on purpose: that one drops defaults, docs and logical
    types, which matter for schema resolution and for what a decoded value looks like.
    """
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def full_name(schema: Mapping[str, Any]) -> str:
    name = str(schema.get("name", schema.get("type", "?")))
    namespace = schema.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else name


ITEM_SCHEMA: Schema = load_schema("nomenclature_item")
CLASSIFIED_SCHEMA: Schema = load_schema("classified_item")
REJECTED_SCHEMA: Schema = load_schema("rejected_record")
DRIFT_ALERT_SCHEMA: Schema = load_schema("drift_alert")
DRIFT_COUNTS_SCHEMA: Schema = load_schema("drift_counts")
CORRECTION_SCHEMA: Schema = load_schema("correction")
# The fields of a correction's nested CorrectedFields record, as the schema declares them.
_CORRECTED = next(f for f in CORRECTION_SCHEMA["fields"] if f["name"] == "corrected_fields")
CORRECTED_FIELDS: tuple[str, ...] = tuple(f["name"] for f in _CORRECTED["type"][1]["fields"])
MODEL_EVENT_SCHEMA: Schema = load_schema("model_event")
LIFECYCLE_SCHEMA: Schema = load_schema("lifecycle_message")
REVIEW_SCHEMA: Schema = load_schema("review_item")
