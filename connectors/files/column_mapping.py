"""Which column of an export is which schema field: common Russian and English headers, compared without
case, spaces and punctuation ("Ед. изм." = "ед изм" = "ЕДИЗМ"), plus an operator's override file."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connectors.files.file_formats import read_json_object
from schemas import CORRECTION_SCHEMA, ITEM_SCHEMA

ITEM_FIELDS: tuple[str, ...] = tuple(f["name"] for f in ITEM_SCHEMA["fields"])
_CORRECTED = next(f for f in CORRECTION_SCHEMA["fields"] if f["name"] == "corrected_fields")
# A correction row is flat: the corrected fields are columns of their own, as `correction_value` reads them.
CORRECTION_FIELDS: tuple[str, ...] = tuple(
    name
    for f in CORRECTION_SCHEMA["fields"]
    for name in ([g["name"] for g in _CORRECTED["type"][1]["fields"]] if f is _CORRECTED else [f["name"]])
)

ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("Код", "Артикул", "ID", "Идентификатор", "Код номенклатуры", "item_id", "SKU"),
    "name": (
        "Наименование",
        "Наименование номенклатуры",
        "Название",
        "Номенклатура",
        "Наименование товара",
        "Наименование товара, работы, услуги",
        "Наименование объекта закупки",
        "Item name",
    ),
    "full_name": ("Полное наименование", "Наименование полное", "Full name"),
    "unit": ("Ед. изм.", "Ед. измерения", "Единица измерения", "ЕИ", "Ед.", "UoM", "Unit of measure"),
    "okved_code": ("ОКВЭД", "ОКВЭД2", "ОКВЭД 2", "Код ОКВЭД", "Код ОКВЭД2", "okved", "OKVED2"),
    "hs_code": ("ТН ВЭД", "ТНВЭД", "Код ТН ВЭД", "ТН ВЭД ЕАЭС", "Код ТН ВЭД ЕАЭС", "HS code", "HS"),
    "country": ("Страна", "Страна происхождения", "Код страны", "Country of origin"),
    "region": ("Регион", "Субъект РФ"),
    "kind": ("Вид", "Вид номенклатуры"),
    "type_hint": ("Тип", "Тип номенклатуры", "type"),
    "source": ("Источник", "Система-источник"),
    "created_at": ("Дата", "Дата создания", "created", "date"),
    "label": ("Признак", "Тип (товар/услуга)", "Товар/услуга", "Класс", "class"),
    "user": ("Пользователь", "Автор"),
    "comment": ("Комментарий",),
    "model_version": ("Версия модели",),
    "corrected_at": ("Дата исправления",),
}


class MappingError(ValueError):
    pass


def header_key(header: str) -> str:
    """What a header is compared by: lower case, ё as е, letters and digits only."""
    return "".join(ch for ch in header.lower().replace("ё", "е") if ch.isalnum())


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for target, aliases in ALIASES.items():
        for alias in (target, *aliases):
            key = header_key(alias)
            if table.setdefault(key, target) != target:
                raise AssertionError(f"alias {alias!r} given for both {table[key]} and {target}")
    return table


_BY_KEY = _alias_table()


@dataclass(frozen=True)
class ColumnMapping:
    """A file's headers resolved: ``columns`` maps a header to its field, in file order."""

    columns: dict[str, str]
    unknown: list[str] = field(default_factory=list)  # no field has this header
    ignored: list[str] = field(default_factory=list)  # mapped to null, or to a field the target lacks

    def apply(self, row: Mapping[str, object]) -> dict[str, object]:
        return {target: row[header] for header, target in self.columns.items() if header in row}


def load_overrides(path: Path) -> dict[str, str | None]:
    """An override file: a JSON object {"Column in the file": "schema_field" | null}; a field of the item
    or of a correction."""
    data = read_json_object(path, "mapping file", '{"Column": "field" | null}', MappingError)
    known = sorted({*ITEM_FIELDS, *CORRECTION_FIELDS})
    for column, target in data.items():
        if target is not None and target not in known:
            raise MappingError(
                f"mapping file {path}: column {column!r} maps to {target!r}, which is not a field "
                f"(fields: {', '.join(known)}; null ignores the column)"
            )
    return data


def resolve_columns(
    headers: Iterable[str], fields: Collection[str], overrides: Mapping[str, str | None] | None = None
) -> ColumnMapping:
    """Map ``headers`` onto ``fields``. An override names a header exactly or by its `header_key`; it wins
    over the built-in aliases. Two headers for one field is an error (the row would be ambiguous)."""
    overrides = overrides or {}
    by_key = {header_key(column): target for column, target in overrides.items()}
    columns: dict[str, str] = {}
    unknown: list[str] = []
    ignored: list[str] = []
    claimed: dict[str, str] = {}
    for header in headers:
        key = header_key(header)
        if header in overrides or key in by_key:
            target = overrides[header] if header in overrides else by_key[key]
            how = "the mapping file"
        else:
            target = _BY_KEY.get(key)
            how = "its header"
            if target is None:
                unknown.append(header)
                continue
        if target is None or target not in fields:
            ignored.append(header)
            continue
        if target in claimed:
            raise MappingError(
                f"columns {claimed[target]!r} and {header!r} both map to {target} ({how}); "
                f'say which one with --mapping, e.g. {{"{header}": null}}'
            )
        claimed[target] = header
        columns[header] = target
    return ColumnMapping(columns, unknown, ignored)
