"""XLSX sheets as tables (openpyxl, read-only, cached formula values): the header is the first row with a
non-blank cell, and a number comes through as the text the cell shows.

Codes are often stored as numbers: ТН ВЭД 8471300000 reads as an int or the float 8471300000.0, ОКВЭД 62.01 as
a float. An integral number becomes its digits, any other its shortest exact decimal; a fixed number format
of zeros ("00000", "00.00") is honoured, so a code whose leading zero the format shows keeps it. Text cells
are never touched ("00123" stays "00123").
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connectors.files.cell_values import clean_text, number_text
from connectors.files.tables import FileFormatError, SourceRow, Table

_ZEROS_FORMAT = re.compile(r"^(0+)(?:\.(0+))?$")


def cell_value(value: Any, number_format: str | None) -> Any:
    """A cell as the row holds it: text for numbers, dates/times as they are, None for empty."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    fixed = _ZEROS_FORMAT.match(number_format or "")
    if fixed is None:
        return number_text(value)
    whole, decimals = len(fixed.group(1)), len(fixed.group(2) or "")
    width = whole + (decimals + 1 if decimals else 0) + (1 if value < 0 else 0)
    return f"{value:0{width}.{decimals}f}"


def open_sheet(path: Path, sheet: str | None = None) -> Table:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        raise FileFormatError(f"{path}: not a readable XLSX workbook: {exc}") from None
    try:
        worksheet = _pick(workbook, sheet, path)
        # Some writers record a wrong sheet size (e.g. "A1"); read the cells that are really there.
        worksheet.reset_dimensions()
        rows = _numbered(worksheet.iter_rows())
        headers: list[str] = []
        for _, cells in rows:
            headers = [_header_text(c) for c in cells]
            if any(headers):
                break
    except BaseException:
        workbook.close()
        raise
    table = Table(path, "xlsx", sheet=worksheet.title, headers=headers, closer=workbook.close)
    table.rows = _sheet_rows(workbook, rows, headers)
    return table


def _header_text(cell: Any) -> str:
    value = cell_value(cell.value, getattr(cell, "number_format", None))
    return "" if value is None else clean_text(str(value)) or ""


def _pick(workbook: Any, sheet: str | None, path: Path) -> Any:
    sheets = workbook.worksheets
    if not sheets:
        raise FileFormatError(f"{path}: the workbook has no worksheet")
    if sheet is None:
        return sheets[0]
    for candidate in sheets:
        if candidate.title == sheet:
            return candidate
    for candidate in sheets:
        if candidate.title.casefold() == sheet.strip().casefold():
            return candidate
    if sheet.isdigit() and 1 <= int(sheet) <= len(sheets):
        return sheets[int(sheet) - 1]
    names = ", ".join(repr(s.title) for s in sheets)
    raise FileFormatError(f"{path}: no sheet {sheet!r}; sheets: {names} (or a number from 1)")


def _numbered(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """Rows with their sheet row number (cells know it; an empty row's cells may not)."""
    number = 0
    for cells in rows:
        known = next((c.row for c in cells if getattr(c, "row", None) is not None), None)
        number = known if known is not None else number + 1
        yield number, cells


def _sheet_rows(
    workbook: Any, rows: Iterator[tuple[int, tuple[Any, ...]]], headers: list[str]
) -> Iterator[SourceRow]:
    width = len(headers)
    try:
        for number, cells in rows:
            values = [cell_value(c.value, getattr(c, "number_format", None)) for c in cells]
            extra = any(v is not None and str(v).strip() for v in values[width:])
            yield SourceRow(number, dict(zip(headers, values, strict=False)), extra_cells=extra)
    finally:
        workbook.close()
