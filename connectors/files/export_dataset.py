"""`nomenclature dataset build --input …`: a folder of heterogeneous labelled exports (CSV/TSV in any of the
encodings and delimiters `connectors.files.source` detects, XLSX, Parquet, JSONL) as one labelled dataset.

Each row is read and mapped as `nomenclature produce` reads it (same header aliases, `--mapping`, cleaning,
stable ids, full_name from name) and must also carry a label that means product or service
(`connectors.files.labels`; 0 = product, 1 = service; `--label-map` adds or overrides values). A row is taken
or skipped with a reason: the connector's (``empty_row``, ``undecodable``, ``bad_json``, ``not_an_object``,
``no_name``, ``bad_created_at``), ``label_missing``, ``label_unknown:<value>``, and after all files are read:

- ``duplicate``: the same item as an earlier row (by `dedup_key`: name and full name as the featurizer
  normalises them, the other item fields case-insensitively; id, source and created_at not compared) with
  the same label; the first one, in input order, is kept;
- ``label_conflict``: the same item under different labels; every row of it is dropped (which label is
  right is for a person to say; the summary lists them).

Output: parquet with the item schema's fields (label normalised) plus ``source_file`` (the file's name
relative to the input directory, or the file's name) and ``source_row`` (the row number reported for it),
rows in input order (arguments in the order given, a directory's files sorted, rows as in the file);
`--csv` writes the same rows as UTF-8 CSV, which `nomenclature train --data` and `evaluate --input` read.
The summary (printed, and written as ``<output without suffix>.summary.json``) counts every row read.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.files.cell_values import as_text
from connectors.files.column_mapping import ITEM_FIELDS
from connectors.files.items import BadRow, to_item
from connectors.files.labels import DEFAULT_LABELS, label_table, normalize_label
from connectors.files.source import FileReport, SourceOptions, expand_inputs, open_source
from models.features.text_normalization import normalize_text
from models.registry.atomic_files import atomic_write_bytes, atomic_write_text

EXTRA_COLUMNS = ("source_file", "source_row")
COLUMNS = (*ITEM_FIELDS, *EXTRA_COLUMNS)
SCHEMA = pa.schema(
    [
        pa.field(name, pa.timestamp("ms", tz="UTC") if name == "created_at" else pa.string())
        for name in ITEM_FIELDS
    ]
    + [pa.field("source_file", pa.string()), pa.field("source_row", pa.int64())]
)
ROW_GROUP_ROWS = 100_000
LISTED_CONFLICTS = 20
MAX_SHOWN_LABEL = 40
_NAME_FIELDS = ("name", "full_name")
# what tells two rows apart besides the names: every item field but the row's identity, origin and label
_NOT_COMPARED = ("id", "source", "created_at", "label")
_OTHER_FIELDS = tuple(f for f in ITEM_FIELDS if f not in (*_NAME_FIELDS, *_NOT_COMPARED))


@dataclass
class _Row:
    item: dict[str, Any]
    file: int
    number: int


def dedup_key(item: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes two rows the same item: what the classifier sees of them."""
    names = tuple(normalize_text(item[f] or "") for f in _NAME_FIELDS)
    return names + tuple((item[f] or "").casefold() for f in _OTHER_FIELDS)


def build_export_dataset(
    inputs: list[Path],
    output: Path,
    *,
    csv_path: Path | None = None,
    options: SourceOptions | None = None,
    label_overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Read every input, write the dataset (and its summary); returns the summary."""
    labels = label_table(label_overrides) if label_overrides else DEFAULT_LABELS
    options = replace(options or SourceOptions(), fields=ITEM_FIELDS, labels=labels)
    files = expand_inputs(inputs)
    _check_unique_names(files)
    reports = []
    rows: list[_Row] = []
    for index, (path, name) in enumerate(files):
        source = open_source(path, options, name)
        try:
            for number, mapped in source.rows():
                row = _taken(source.report, number, mapped, labels)
                if row is not None:
                    source.report.records += 1
                    rows.append(_Row(row, index, number))
        finally:
            source.close()
        reports.append(source.report)
    kept, conflicts = _deduplicated(rows, reports)
    _write_parquet(output, kept, files)
    if csv_path is not None:
        _write_csv(csv_path, kept, files)
    summary = _summary(output, csv_path, kept, reports, conflicts, label_overrides)
    atomic_write_text(summary_path(output), json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return summary


def summary_path(output: Path) -> Path:
    return output.with_suffix(".summary.json")


def _check_unique_names(files: list[tuple[Path, str]]) -> None:
    seen: dict[str, Path] = {}
    for path, name in files:
        if name in seen:
            raise ValueError(
                f"two inputs are both named {name!r} ({seen[name]} and {path}); source_file would not tell "
                "them apart: pass their directory instead, or rename one"
            )
        seen[name] = path


def _taken(
    report: FileReport, number: int, mapped: dict[str, Any], labels: Mapping[str, str]
) -> dict[str, Any] | None:
    try:
        item = to_item(mapped, labels)
    except BadRow as exc:
        report.skip(number, exc.reason, str(exc))
        return None
    if item["name"] is None:
        report.skip(number, "no_name")
        return None
    raw_label = as_text(mapped.get("label"))
    if raw_label is None:
        report.skip(number, "label_missing")
        return None
    label = normalize_label(raw_label, labels)
    if label is None:
        report.skip(number, f"label_unknown:{raw_label[:MAX_SHOWN_LABEL]}")
        return None
    item["label"] = label
    if item["created_at"] is not None:
        created = item["created_at"].astimezone(UTC)
        item["created_at"] = created.replace(microsecond=created.microsecond // 1000 * 1000)
    return item


def _deduplicated(rows: list[_Row], reports: list[FileReport]) -> tuple[list[_Row], list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(dedup_key(row.item), []).append(index)
    dropped: set[int] = set()
    conflicts = []
    for members in groups.values():
        if len(members) == 1:
            continue
        labels = Counter(rows[i].item["label"] for i in members)
        if len(labels) > 1:
            reason, gone = "label_conflict", members
            first = rows[members[0]].item
            conflicts.append(
                {
                    "name": first["name"],
                    "full_name": first["full_name"],
                    "labels": dict(sorted(labels.items())),
                    "rows": [_position(rows[i], reports) | {"label": rows[i].item["label"]} for i in members],
                }
            )
        else:
            reason, gone = "duplicate", members[1:]
        for i in gone:
            report = reports[rows[i].file]
            report.records -= 1
            report.skip(rows[i].number, reason)
            dropped.add(i)
    for report in reports:
        report.skipped_rows.sort(key=lambda entry: entry["row"])
    return [row for i, row in enumerate(rows) if i not in dropped], conflicts


def _position(row: _Row, reports: list[FileReport]) -> dict[str, Any]:
    return {"file": reports[row.file].file, "row": row.number}


def _table(rows: list[_Row], files: list[tuple[Path, str]]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [row.item[name] for row in rows] for name in ITEM_FIELDS}
    columns["source_file"] = [files[row.file][1] for row in rows]
    columns["source_row"] = [row.number for row in rows]
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def _write_parquet(output: Path, rows: list[_Row], files: list[tuple[Path, str]]) -> None:
    buffer = io.BytesIO()
    pq.write_table(_table(rows, files), buffer, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, buffer.getvalue())


def _write_csv(path: Path, rows: list[_Row], files: list[tuple[Path, str]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        cells = [_csv_cell(row.item[name]) for name in ITEM_FIELDS]
        writer.writerow([*cells, files[row.file][1], row.number])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text.getvalue())


def _csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    return "" if value is None else value


def _summary(
    output: Path,
    csv_path: Path | None,
    kept: list[_Row],
    reports: list[FileReport],
    conflicts: list[dict[str, Any]],
    label_overrides: Mapping[str, str] | None,
) -> dict[str, Any]:
    files = []
    for report in reports:
        entry = report.as_dict()
        entry["rows_taken"] = entry.pop("records")
        files.append(entry)
    reasons: Counter[str] = Counter()
    for report in reports:
        reasons.update(report.skipped_by_reason)
    return {
        "output": str(output),
        "csv": None if csv_path is None else str(csv_path),
        "summary": str(summary_path(output)),
        "columns": list(COLUMNS),
        "rows": len(kept),
        "labels": dict(sorted(Counter(row.item["label"] for row in kept).items())),
        "label_map": dict(label_overrides or {}),
        "totals": {
            "files": len(reports),
            "rows_read": sum(r.rows_read for r in reports),
            "rows_taken": len(kept),
            "skipped": sum(r.skipped for r in reports),
            "skipped_by_reason": dict(sorted(reasons.items())),
        },
        "label_conflicts": {"items": len(conflicts), "listed": conflicts[:LISTED_CONFLICTS]},
        "files": files,
    }
