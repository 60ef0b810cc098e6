"""What reading an export file gives, whatever its format: a `Table` of `SourceRow`s, or a `FileFormatError`
(`connectors.files.file_formats` opens delimited text, JSON and Parquet; `connectors.files.spreadsheet`
XLSX)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class FileFormatError(ValueError):
    pass



@dataclass(frozen=True)
class SourceRow:
    """A row of the file: ``values`` by header, or None with ``problem`` when it could not be read."""

    number: int
    values: dict[str, Any] | None
    problem: str | None = None
    extra_cells: bool = False  # more non-blank cells than headers (those are dropped)


@dataclass
class Table:
    path: Path
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    headers: list[str] | None = None  # None: every row has its own keys (JSON)
    rows: Iterator[SourceRow] = field(default_factory=lambda: iter(()))
    closer: Callable[[], None] | None = None  # releases what opening took (a file, a workbook)

    def close(self) -> None:
        close_rows = getattr(self.rows, "close", None)
        if close_rows is not None:
            close_rows()
        if self.closer is not None:
            self.closer()
