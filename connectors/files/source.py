"""Items from export files (CSV, TSV, XLSX, Parquet, JSON lines), with a report of every row read.

`open_source` reads a file's table (`connectors.files.file_formats`), maps its headers onto the item's (or a
correction's) fields (`connectors.files.column_mapping`) and yields cleaned records
(`connectors.files.items`). It skips only rows that cannot become a record at all, each with its row number
and a reason:

- ``empty_row``: every cell blank (blank rows at the end of the file are not counted at all);
- ``undecodable``: bytes the file's encoding cannot decode (the rest of the file is read);
- ``bad_json`` / ``not_an_object``: a JSON line that is not JSON, or not an object;
- ``no_name``: no name once the columns are mapped (nothing to classify, and the row number is what an
  operator needs to fix the export; a dead letter would not carry it);
- ``bad_created_at`` / ``bad_corrected_at``: a date that is neither ISO 8601, DD.MM.YYYY nor epoch ms.

Everything else (too long, unknown codes, a label that is neither product nor service …) is the
validator's to judge: such records are sent and end up in the dead-letter topic with their reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.files.cell_values import is_undecodable
from connectors.files.column_mapping import (
    CORRECTION_FIELDS,
    ITEM_FIELDS,
    ColumnMapping,
    MappingError,
    resolve_columns,
)
from connectors.files.file_formats import SUFFIXES, open_table
from connectors.files.items import BadRow, correction_row, stable_id, to_item
from connectors.files.labels import DEFAULT_LABELS
from connectors.files.tables import Table

__all__ = [
    "ITEM_FIELDS",
    "FileReport",
    "SourceFile",
    "SourceOptions",
    "expand_inputs",
    "open_source",
    "read_items",
    "read_rows",
    "stable_id",
    "to_item",
]

LISTED_ROWS = 20
NESTED = "corrected_fields"  # a correction's nested record in JSON/Parquet: its entries are columns too


@dataclass(frozen=True)
class SourceOptions:
    encoding: str | None = None  # None: detected
    sheet: str | None = None  # XLSX sheet name or 1-based number; None: the first
    overrides: Mapping[str, str | None] | None = None  # --mapping
    fields: tuple[str, ...] = ITEM_FIELDS  # what the rows become: ITEM_FIELDS or CORRECTION_FIELDS
    labels: Mapping[str, str] = field(default_factory=lambda: DEFAULT_LABELS)


@dataclass
class FileReport:
    """Per file: how it was read and what became of its rows. ``rows_read`` counts data rows (not the
    header); every one is either in ``records`` or in ``skipped``."""

    file: str
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    unknown_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    rows_read: int = 0
    records: int = 0
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    skipped_rows: list[dict[str, Any]] = field(default_factory=list)
    rows_with_extra_cells: int = 0

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    def skip(self, row: int, reason: str, detail: str | None = None) -> None:
        self.skipped_by_reason[reason] += 1
        if len(self.skipped_rows) < LISTED_ROWS:
            entry: dict[str, Any] = {"row": row, "reason": reason}
            if detail:
                entry["detail"] = detail
            self.skipped_rows.append(entry)

    def note_columns(self, mapping: ColumnMapping) -> None:
        for header, target in mapping.columns.items():
            self.columns.setdefault(header, target)
        for found, seen in ((mapping.unknown, self.unknown_columns), (mapping.ignored, self.ignored_columns)):
            for header in found:
                shown = header or "(blank header)"
                if shown not in seen:
                    seen.append(shown)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k not in ("skipped_by_reason", "skipped_rows")}
        out["skipped"] = self.skipped
        out["skipped_by_reason"] = dict(sorted(self.skipped_by_reason.items()))
        out["skipped_rows"] = self.skipped_rows
        if self.skipped > len(self.skipped_rows):
            out["skipped_rows_not_listed"] = self.skipped - len(self.skipped_rows)
        return out


class SourceFile:
    """One export file being read; ``report`` fills in as its rows are iterated."""

    def __init__(self, table: Table, options: SourceOptions, label: str) -> None:
        self.table = table
        self.options = options
        self.report = FileReport(
            label, table.format, table.encoding, _shown_delimiter(table.delimiter), table.sheet
        )
        self._mappings: dict[tuple[str, ...], ColumnMapping] = {}
        headers = table.headers
        # A correction's nested record adds columns row by row, so such a table is mapped per row.
        self._nested = options.fields == CORRECTION_FIELDS and (headers is None or NESTED in headers)
        self._fixed = None if headers is None or self._nested else self._mapping(tuple(headers))
        if self._fixed is not None and "name" not in self._fixed.columns.values():
            raise MappingError(_no_name_column(label, headers or []))

    def _mapping(self, headers: tuple[str, ...]) -> ColumnMapping:
        mapping = self._mappings.get(headers)
        if mapping is None:
            mapping = resolve_columns(headers, self.options.fields, self.options.overrides)
            self._mappings[headers] = mapping
            self.report.note_columns(mapping)
        return mapping

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row number, {field: raw cell}) of every row with something in it; the others are reported.
        Blank rows after the last row with something in it are not rows (sheets often have hundreds)."""
        blank: list[int] = []
        for row in self.table.rows:
            if row.values is not None and not any(_present(v) for v in row.values.values()):
                blank.append(row.number)
                continue
            for number in blank:
                self.report.rows_read += 1
                self.report.skip(number, "empty_row")
            blank.clear()
            self.report.rows_read += 1
            if row.values is None:
                self.report.skip(row.number, row.problem or "unreadable")
                continue
            values = _flattened(row.values) if self._nested else row.values
            mapped = (self._fixed or self._mapping(tuple(values))).apply(values)
            if any(is_undecodable(v) for v in mapped.values()):
                self.report.skip(row.number, "undecodable")
                continue
            if row.extra_cells:
                self.report.rows_with_extra_cells += 1
            yield row.number, mapped

    def close(self) -> None:
        self.table.close()

    def records(self) -> Iterator[dict[str, Any]]:
        """Items (or flat correction rows, with ``fields=CORRECTION_FIELDS``) of the rows that make one."""
        convert = correction_row if self.options.fields == CORRECTION_FIELDS else to_item
        for number, mapped in self.rows():
            try:
                record = convert(mapped, self.options.labels)
            except BadRow as exc:
                self.report.skip(number, exc.reason, str(exc))
                continue
            if record["name"] is None:
                self.report.skip(number, "no_name")
                continue
            self.report.records += 1
            yield record


def open_source(path: Path, options: SourceOptions | None = None, label: str | None = None) -> SourceFile:
    """The file, its format and encoding found and its headers mapped (a mapping error is raised here,
    before any row is read, for every format with a header row)."""
    options = options or SourceOptions()
    table = open_table(path, options.encoding, options.sheet)
    return SourceFile(table, options, label or str(path))


def expand_inputs(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """Files to read and the name each is reported by: a file as given; a directory's files of a known
    format, recursively, sorted, named relative to it (hidden files and Excel's ~$ lock files left out)."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SUFFIXES and not _hidden(p.relative_to(path))
            )
            if not inside:
                raise FileNotFoundError(f"{path}: no CSV, TSV, XLSX, Parquet or JSONL files in it")
            found.extend((p, p.relative_to(path).as_posix()) for p in inside)
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return found


def read_rows(path: Path, options: SourceOptions | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a file as {field: cell}, headers mapped; rows with nothing in them left out."""
    for _, row in open_source(path, options).rows():
        yield row


def read_items(path: Path, options: SourceOptions | None = None) -> Iterator[dict[str, Any]]:
    """Every row with something in it as an item, nameless ones included (callers judge them); a bad
    date raises `connectors.files.items.BadRow`."""
    options = options or SourceOptions()
    for row in read_rows(path, options):
        yield to_item(row, options.labels)


def _no_name_column(label: str, headers: list[str]) -> str:
    if not any(headers):
        return f"{label}: no header row (the file or sheet is empty)"
    shown = ", ".join(repr(h) for h in headers if h)
    return (
        f"{label}: no column is the item's name (headers: {shown}); name it with --mapping, "
        f'e.g. {{"{next(h for h in headers if h)}": "name"}}'
    )


def _present(value: Any) -> bool:
    return value is not None and (not isinstance(value, str) or value.strip() != "")


def _flattened(values: dict[str, Any]) -> dict[str, Any]:
    nested = values.get(NESTED)
    if not isinstance(nested, dict):
        return values
    flat = {k: v for k, v in values.items() if k != NESTED}
    flat.update({k: v for k, v in nested.items() if v is not None or k not in flat})
    return flat


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "~$")) for part in relative.parts)


def _shown_delimiter(delimiter: str | None) -> str | None:
    return {"\t": "tab"}.get(delimiter, delimiter) if delimiter else None
