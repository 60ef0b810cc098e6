"""Writers of export files as other programs make them, for the file-connector and dataset-builder tests."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BOMS = {"utf-8-sig": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}


def write_delimited(
    path: Path,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Path:
    """A CSV as Excel writes one: minimal quoting, CRLF line ends; ``utf-16-le``/``-be`` get their BOM."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(headers)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    path.write_bytes(BOMS.get(encoding, b"") + text.getvalue().encode(encoding))
    return path


def write_xlsx(
    path: Path,
    headers: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    *,
    formats: dict[tuple[int, int], str] | None = None,
    sheet: str = "Номенклатура",
    leading_rows: Sequence[Sequence[Any]] = (),
    other_sheets: Sequence[str] = (),
) -> Path:
    """A workbook whose first sheet has ``leading_rows`` (blank ones too), the header, then ``rows``.
    ``formats`` sets number formats by (data row index, column index), both from 0."""
    import openpyxl

    workbook = openpyxl.Workbook()
    worksheet = workbook.active
    worksheet.title = sheet
    for row in leading_rows:
        worksheet.append(list(row))
    worksheet.append(list(headers))
    first = worksheet.max_row + 1
    for row in rows:
        worksheet.append(list(row))
    for (r, c), number_format in (formats or {}).items():
        worksheet.cell(row=first + r, column=c + 1).number_format = number_format
    for name in other_sheets:
        other = workbook.create_sheet(name)
        other.append(["Наименование", "Признак"])
        other.append([f"Строка листа {name}", "услуга"])
    workbook.save(path)
    return path


def write_parquet(path: Path, columns: dict[str, list[Any]], types: dict[str, Any] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = types or {}
    arrays = {name: pa.array(values, type=types.get(name, pa.string())) for name, values in columns.items()}
    pq.write_table(pa.table(arrays), path)
    return path


def write_jsonl(path: Path, rows: Sequence[dict[str, Any] | None], encoding: str = "utf-8") -> Path:
    """JSON lines; a None row is a blank line."""
    lines = ["" if row is None else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path
