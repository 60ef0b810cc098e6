"""Items from files: CSV (any delimiter csv.Sniffer recognises) and JSON lines."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import ITEM_SCHEMA

ITEM_FIELDS = [f["name"] for f in ITEM_SCHEMA["fields"]]


def stable_id(item: dict[str, Any]) -> str:
    """An id derived from the content, for rows that have none."""
    text = "\x1f".join(str(item.get(f) or "") for f in ("name", "full_name", "unit", "source"))
    return "h-" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def to_item(row: dict[str, Any]) -> dict[str, Any]:
    """A NomenclatureItem dict from a loose row: unknown columns dropped, blanks → None."""
    item: dict[str, Any] = {}
    for name in ITEM_FIELDS:
        value = row.get(name)
        if isinstance(value, str):
            value = value.strip() or None
        item[name] = value
    if item["full_name"] is None and item["name"] is not None:
        item["full_name"] = item["name"]
    created = item["created_at"]
    if isinstance(created, str):
        item["created_at"] = datetime.fromisoformat(created.replace("Z", "+00:00"))
    elif isinstance(created, int | float):
        item["created_at"] = datetime.fromtimestamp(created / 1000, UTC)
    if item["id"] is None:
        item["id"] = stable_id(item)
    else:
        item["id"] = str(item["id"])
    return item


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a .csv/.tsv, .jsonl/.ndjson or .parquet file as dicts."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
        return
    if suffix in {".jsonl", ".ndjson", ".json"}:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
        return
    with path.open(encoding="utf-8-sig", newline="") as handle:
        sample = handle.read(65536)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel_tab if suffix == ".tsv" else csv.excel
        yield from csv.DictReader(handle, dialect=dialect)


def read_items(path: Path) -> Iterator[dict[str, Any]]:
    for row in read_rows(path):
        yield to_item(row)
