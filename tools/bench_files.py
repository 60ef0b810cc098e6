"""How fast the file connector reads exports: ``python -m tools.bench_files --rows 100000``.

Writes N synthetic rows (Russian headers, Cyrillic names, codes) as a cp1251 semicolon CSV, an XLSX workbook
(codes stored as numbers), a Parquet file and UTF-8 JSON lines, then reads each through
`connectors.files.source` (detection, header mapping, cleaning, ids) to items, and prints rows/s per format as
JSON. Nothing is sent.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from connectors.files.source import open_source

HEADERS = ["Код", "Наименование", "Ед. изм.", "ОКВЭД2", "ТН ВЭД", "Страна", "Признак"]
WORDS = ["Болт", "Гайка", "Ремонт", "кровли", "Услуги", "связи", "Бумага", "офисная", "А4", "монтаж", "щётка"]


def synthetic_rows(count: int, seed: int = 1) -> list[list[Any]]:
    rng = random.Random(seed)
    return [
        [
            f"b-{i}",
            " ".join(rng.choices(WORDS, k=4)),
            rng.choice(["шт", "кг", "усл. ед.", "м"]),
            rng.choice(["62.01", "43.91", ""]),
            rng.choice([8471300000, 7318150000, None]),
            "RU",
            rng.choice(["товар", "услуга"]),
        ]
        for i in range(count)
    ]


def write_all(directory: Path, rows: list[list[Any]]) -> dict[str, Path]:
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {fmt: directory / f"bench.{fmt}" for fmt in ("csv", "xlsx", "parquet", "jsonl")}
    with paths["csv"].open("w", encoding="cp1251", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(HEADERS)
        writer.writerows(["" if c is None else c for c in row] for row in rows)
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Номенклатура")
    sheet.append(HEADERS)
    for row in rows:
        sheet.append(row)
    workbook.save(paths["xlsx"])
    columns = {h: [row[i] for row in rows] for i, h in enumerate(HEADERS)}
    types = {h: pa.int64() if h == "ТН ВЭД" else pa.string() for h in HEADERS}
    pq.write_table(pa.table({h: pa.array(v, type=types[h]) for h, v in columns.items()}), paths["parquet"])
    with paths["jsonl"].open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(dict(zip(HEADERS, row, strict=True)), ensure_ascii=False) + "\n")
    return paths


def measure(path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    source = open_source(path)
    items = sum(1 for _ in source.records())
    seconds = time.perf_counter() - started
    return {"rows": items, "seconds": round(seconds, 2), "rows_per_s": round(items / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-files-") as scratch:
        paths = write_all(Path(scratch), synthetic_rows(args.rows))
        sizes = {fmt: round(path.stat().st_size / 1e6, 1) for fmt, path in paths.items()}
        results = {fmt: measure(path) | {"mb": sizes[fmt]} for fmt, path in paths.items()}
    print(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
