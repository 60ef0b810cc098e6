"""Label values of exports in the schema's two words, product and service.

0 is product and 1 is service (the "is it a service" flag exports carry); `--label-map` overrides any entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from connectors.files.file_formats import read_json_object

PRODUCT, SERVICE = "product", "service"
LABELS = (PRODUCT, SERVICE)

_SYNONYMS = {
    PRODUCT: (
        "товар",
        "товары",
        "продукция",
        "продукт",
        "материал",
        "материалы",
        "тмц",
        "product",
        "products",
        "goods",
        "good",
        "0",
    ),
    SERVICE: ("услуга", "услуги", "работа", "работы", "работы, услуги", "service", "services", "1"),
}


class LabelMapError(ValueError):
    pass


def label_key(value: str) -> str:
    """What a label value is compared by: lower case, ё as е, inner whitespace as single spaces."""
    return " ".join(value.lower().replace("ё", "е").split())


DEFAULT_LABELS: dict[str, str] = {label_key(v): label for label, values in _SYNONYMS.items() for v in values}


def load_label_map(path: Path) -> dict[str, str]:
    """A label-map file: a JSON object {"value in the file": "product" | "service"}."""
    data = read_json_object(path, "label map", '{"value": "product" | "service"}', LabelMapError)
    for value, label in data.items():
        if label not in LABELS:
            raise LabelMapError(f"label map {path}: {value!r} maps to {label!r}; use 'product' or 'service'")
    return data


def label_table(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    return DEFAULT_LABELS | {label_key(value): label for value, label in (overrides or {}).items()}


def normalize_label(value: str | None, table: Mapping[str, str] = DEFAULT_LABELS) -> str | None:
    """The label ``value`` stands for, or None when it stands for none (blank or unknown)."""
    if value is None:
        return None
    return table.get(label_key(value))
