"""Tables in export files: the format from the name (checked against the content), then rows as
``{header: cell}`` with the row number a person would look for in the file.

Formats: CSV (delimiter detected among , ; tab |, quoted fields may hold delimiters and newlines), TSV (tab),
XLSX (`connectors.files.spreadsheet`), Parquet, JSON lines (and a JSON array of objects). Text formats are
decoded as `connectors.files.text_encoding` finds; bytes the encoding cannot decode mark their row as
undecodable instead of failing the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connectors.files.cell_values import clean_text
from connectors.files.tables import FileFormatError, SourceRow, Table
from connectors.files.text_encoding import Encoding, resolve_encoding

SUFFIXES = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
DELIMITERS = (",", ";", "\t", "|")
SNIFF_CHARS = 1 << 16
SNIFF_RECORDS = 200
_ZIP, _PARQUET = b"PK\x03\x04", b"PAR1"
UNDECODABLE = "\udc80"  # what an undecodable byte run reads as; no decoded text holds a lone surrogate


def _mark_undecodable(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    return UNDECODABLE, error.end


codecs.register_error("nomenclature-mark", _mark_undecodable)


def read_json_object(path: Path, what: str, shape: str, error: type[ValueError]) -> dict[str, Any]:
    """The JSON object in an operator's file (``what`` names it in errors, ``shape`` shows the expected
    form); ``error`` is raised when it cannot be read or is not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what} {path}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a JSON object {shape}")
    return data


def file_format(path: Path) -> str:
    """csv | tsv | xlsx | parquet | jsonl, from the suffix; checked against the file's first bytes."""
    with path.open("rb") as handle:
        head = handle.read(4)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise FileFormatError(f"{path}: the old binary .xls format is not read; save it as .xlsx or CSV")
    fmt = SUFFIXES.get(suffix) or _sniffed(head)
    if fmt is None:
        raise FileFormatError(
            f"{path}: unknown format (suffix {suffix or 'none'}); use .csv, .tsv, .xlsx, .parquet or .jsonl"
        )
    if fmt == "xlsx" and head != _ZIP:
        raise FileFormatError(f"{path}: not an XLSX workbook (no ZIP signature); a renamed CSV or .xls?")
    if fmt == "parquet" and head != _PARQUET:
        raise FileFormatError(f"{path}: not a Parquet file (no PAR1 signature)")
    return fmt


def _sniffed(head: bytes) -> str | None:
    if head == _ZIP:
        return "xlsx"
    if head == _PARQUET:
        return "parquet"
    return None


def open_table(path: Path, encoding: str | None = None, sheet: str | None = None) -> Table:
    """The file's table; headers (when the format has them) are read now, rows as they are iterated."""
    fmt = file_format(path)
    if fmt == "xlsx":
        from connectors.files.spreadsheet import open_sheet

        return open_sheet(path, sheet)
    if fmt == "parquet":
        return _parquet_table(path)
    text_encoding = resolve_encoding(path, encoding)
    if fmt == "jsonl":
        return Table(path, fmt, text_encoding.describe(), rows=_json_rows(path, text_encoding))
    return _delimited_table(path, fmt, text_encoding)


def detect_delimiter(sample: str, truncated: bool = True) -> str | None:
    """The delimiter among `DELIMITERS` that splits the sample's records into one consistent number (> 1)
    of fields, quotes respected; the more consistent, then the more fields, wins. None: one column."""
    best: tuple[float, int, str] | None = None
    for delimiter in DELIMITERS:
        records = [r for r in csv.reader(io.StringIO(sample), delimiter=delimiter) if r][: SNIFF_RECORDS + 1]
        if truncated and len(records) > 1:
            records = records[:-1]  # may be cut in the middle
        if not records:
            continue
        width, count = Counter(len(r) for r in records).most_common(1)[0]
        if width < 2:
            continue
        score = (count / len(records), width, delimiter)
        if best is None or score[:2] > best[:2]:
            best = score
    return None if best is None else best[2]


def _delimited_table(path: Path, fmt: str, encoding: Encoding) -> Table:
    handle = _open_text(path, encoding)
    try:
        sample = handle.read(SNIFF_CHARS)
        truncated = len(sample) == SNIFF_CHARS
        handle.seek(0)
        _skip_bom(handle, encoding)
        delimiter = "\t" if fmt == "tsv" else (detect_delimiter(sample, truncated) or ",")
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            headers, header_line = _header(reader)
        except csv.Error as exc:
            raise FileFormatError(f"{path}: line {reader.line_num}: {exc}") from None
    except BaseException:
        handle.close()
        raise
    table = Table(path, fmt, encoding.describe(), delimiter=delimiter, headers=headers, closer=handle.close)
    table.rows = _delimited_rows(handle, reader, headers, header_line)
    return table


def _header(reader: Any) -> tuple[list[str], int]:
    for cells in reader:
        headers = [clean_text(cell) or "" for cell in cells]
        if any(headers):
            return headers, reader.line_num
    return [], reader.line_num


def _delimited_rows(handle: Any, reader: Any, headers: list[str], after: int) -> Iterator[SourceRow]:
    width = len(headers)
    start = after + 1
    with handle:
        try:
            for cells in reader:
                extra = len(cells) > width and any(cell.strip() for cell in cells[width:])
                yield SourceRow(start, dict(zip(headers, cells, strict=False)), extra_cells=extra)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise FileFormatError(f"{handle.name}: line {reader.line_num}: {exc}") from None


def _open_text(path: Path, encoding: Encoding) -> Any:
    return path.open(encoding=encoding.name, errors="nomenclature-mark", newline="")


def _skip_bom(handle: Any, encoding: Encoding) -> None:
    if encoding.bom and handle.read(1) != "\ufeff":
        handle.seek(0)


def _json_rows(path: Path, encoding: Encoding) -> Iterator[SourceRow]:
    with _open_text(path, encoding) as handle:
        _skip_bom(handle, encoding)
        first = handle.read(1)
        while first.isspace():
            first = handle.read(1)
        if first == "[":
            yield from _json_array_rows(path, "[" + handle.read())
            return
        handle.seek(0)
        _skip_bom(handle, encoding)
        for number, line in enumerate(handle, 1):
            if not line.strip():
                yield SourceRow(number, {})
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                yield SourceRow(number, None, "undecodable" if UNDECODABLE in line else "bad_json")
                continue
            if not isinstance(value, dict):
                yield SourceRow(number, None, "not_an_object")
                continue
            yield SourceRow(number, value)


def _json_array_rows(path: Path, text: str) -> Iterator[SourceRow]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: not a JSON array of objects nor JSON lines: {exc}") from None
    for number, value in enumerate(values, 1):
        if isinstance(value, dict):
            yield SourceRow(number, value)
        else:
            yield SourceRow(number, None, "not_an_object")


def _parquet_table(path: Path) -> Table:
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    headers = list(source.schema_arrow.names)

    def rows() -> Iterator[SourceRow]:
        number = 0
        for batch in source.iter_batches(batch_size=10_000):
            for values in batch.to_pylist():
                number += 1
                yield SourceRow(number, values)

    return Table(path, "parquet", headers=headers, rows=rows(), closer=source.close)
