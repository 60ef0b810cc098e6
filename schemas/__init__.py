"""Avro schemas of the nomenclature topics, their catalogue of ids and the Confluent wire format."""

from schemas.avsc import (
    CLASSIFIED_SCHEMA,
    CORRECTED_FIELDS,
    CORRECTION_SCHEMA,
    DRIFT_ALERT_SCHEMA,
    DRIFT_COUNTS_SCHEMA,
    ITEM_SCHEMA,
    LIFECYCLE_SCHEMA,
    MODEL_EVENT_SCHEMA,
    REJECTED_SCHEMA,
    REVIEW_SCHEMA,
    load_schema,
)
from schemas.errors import RegistryError, SchemaNotInCatalogueError, UnknownSchemaIdError
from schemas.registry import Catalogue, LocalCatalogue, RegistryCatalogue, catalogue_from_url
from schemas.timestamps import now_ms, to_millis
from schemas.wire import DECODE_ERROR_CODES, AvroSerde, DecodeError

__all__ = [
    "CLASSIFIED_SCHEMA",
    "CORRECTED_FIELDS",
    "CORRECTION_SCHEMA",
    "DECODE_ERROR_CODES",
    "DRIFT_ALERT_SCHEMA",
    "DRIFT_COUNTS_SCHEMA",
    "ITEM_SCHEMA",
    "LIFECYCLE_SCHEMA",
    "MODEL_EVENT_SCHEMA",
    "REJECTED_SCHEMA",
    "REVIEW_SCHEMA",
    "AvroSerde",
    "Catalogue",
    "DecodeError",
    "LocalCatalogue",
    "RegistryCatalogue",
    "RegistryError",
    "SchemaNotInCatalogueError",
    "UnknownSchemaIdError",
    "catalogue_from_url",
    "load_schema",
    "now_ms",
    "to_millis",
]
