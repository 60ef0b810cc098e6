"""The corrections log: users' label corrections, appended per Kafka partition to parquet files, and the
reference set of corrections that joined the reference data after a successful retraining cycle.

Layout under one root (``<shared models dir>/corrections``), shared by every worker:

- ``log/p=<partition>/<first offset:012d>-<last offset:012d>.parquet``: one file per `CorrectionsLog.append`
  call, written atomically (temporary file + ``os.replace`` in the same directory). Delivery is
  at-least-once, so after a crash the same offsets may be appended again, in a file of the same or of an
  overlapping range: readers dedupe rows by (partition, offset). The names alone tell how far each
  partition's log goes (`high_offsets`), so "how many corrections arrived since" (`count_after`) reads only
  the files beyond a position, and only their offset column.
- ``snapshots/<sha256[:16]>.parquet``: `CorrectionsLog.snapshot`, the deduped log frozen for one retraining
  cycle. The name is the content hash (rows sorted by id), so equal content is one file.
- ``reference/accepted.json`` and ``reference/accepted-*.parquet``: `ReferenceSet`, the snapshots of cycles
  whose challenger was promoted. A correction already there is not "new" for a later cycle.

A correction's effective label is its latest one per item id: highest ``corrected_at``, ties broken by the
(partition, offset) order of the log.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.registry.atomic_files import atomic_write_bytes, atomic_write_text
from models.training.feature_store import locked

CORRECTION_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "full_name",
    "label",
    "kind",
    "unit",
    "type_hint",
    "okved_code",
    "hs_code",
    "country",
    "region",
    "source",
    "user",
    "comment",
    "model_version",
    "corrected_at",
    "topic",
    "partition",
    "offset",
)
_INT_COLUMNS = {"corrected_at": pa.int64(), "partition": pa.int32(), "offset": pa.int64()}
CORRECTION_SCHEMA = pa.schema([(c, _INT_COLUMNS.get(c, pa.string())) for c in CORRECTION_COLUMNS])
LOG_DIR, SNAPSHOT_DIR, REFERENCE_DIR = "log", "snapshots", "reference"
ACCEPTED_INDEX = "accepted.json"
_LOG_FILE = re.compile(r"(\d{12})-(\d{12})\.parquet")
_PARTITION_DIR = re.compile(r"p=(\d+)")
_SAFE_CYCLE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The row order that breaks corrected_at ties (and makes every sort here deterministic).
_POSITION = ["partition", "offset"]


@dataclass(frozen=True)
class CorrectionsSnapshot:
    """A frozen copy of the deduped log (see `CorrectionsLog.snapshot`); plain data, picklable."""

    path: Path
    sha256: str
    rows: int
    labels: dict[str, int]
    high_offsets: dict[int, int]  # per partition, the highest offset among the rows read
    created_at: int  # epoch ms


# ---- frames ---------------------------------------------------------------------------------------


def empty_frame() -> pd.DataFrame:
    return frame_of(CORRECTION_SCHEMA.empty_table())


def frame_of(table: pa.Table) -> pd.DataFrame:
    """A corrections table as a frame: strings as object columns (None stays None, never NaN), ints int64."""
    columns: dict[str, pd.Series] = {}
    for name in CORRECTION_COLUMNS:
        values = table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
        dtype = "int64" if name in _INT_COLUMNS else object
        columns[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(columns)


def table_of(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pa.Table:
    """Rows (dicts or a frame) as a table of CORRECTION_SCHEMA; keys outside the columns are ignored."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows
    columns = {name: [_cell(row.get(name)) for row in records] for name in CORRECTION_COLUMNS}
    return pa.table(columns, schema=CORRECTION_SCHEMA)


def _cell(value: Any) -> Any:
    """None for a missing value (pandas gives NaN for it); numpy scalars as Python ones."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def dedupe_positions(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (partition, offset): a re-appended record counts once."""
    return frame.drop_duplicates(subset=_POSITION, keep="first")


def latest_per_id(frame: pd.DataFrame) -> pd.DataFrame:
    """Deduped by (partition, offset), then the latest row per id (highest corrected_at, then the later
    log position), sorted by id."""
    ordered = dedupe_positions(frame).sort_values(["corrected_at", *_POSITION], kind="stable")
    latest = ordered.drop_duplicates(subset=["id"], keep="last")
    return latest.sort_values("id", kind="stable").reset_index(drop=True)


def items_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Correction rows as plain dicts (None for missing values), e.g. for `Featurizer.transform`."""
    return [{key: _cell(value) for key, value in row.items()} for row in frame.to_dict("records")]


def content_sha256(frame: pd.DataFrame) -> str:
    """sha256 over a canonical serialisation of the rows (sorted by id, then log position; every column in
    CORRECTION_COLUMNS order, JSON per row): equal content, equal hash, however the rows were stored."""
    digest = hashlib.sha256()
    ordered = frame.sort_values(["id", *_POSITION], kind="stable")
    for row in items_of(ordered[list(CORRECTION_COLUMNS)]):
        digest.update(json.dumps([row[c] for c in CORRECTION_COLUMNS], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def label_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}


def high_offsets_of(frame: pd.DataFrame) -> dict[int, int]:
    if frame.empty:
        return {}
    return {int(p): int(o) for p, o in frame.groupby("partition")["offset"].max().items()}


def new_corrections(snapshot: pd.DataFrame, accepted: pd.DataFrame) -> pd.DataFrame:
    """The snapshot's rows whose (id, corrected_at, label) is not among the accepted corrections."""
    known = set(zip(accepted["id"], accepted["corrected_at"].astype(int), accepted["label"], strict=True))
    keys = zip(snapshot["id"], snapshot["corrected_at"].astype(int), snapshot["label"], strict=True)
    fresh = [key not in known for key in keys]
    return snapshot[fresh].reset_index(drop=True)


def read_parquet_frame(path: Path) -> pd.DataFrame:
    return frame_of(pq.read_table(path, schema=CORRECTION_SCHEMA))


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- the log --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LogFile:
    path: Path
    partition: int
    first: int
    last: int


class CorrectionsLog:
    """The append-only per-partition log under ``root/log`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._offsets: dict[Path, tuple[tuple[int, int], np.ndarray]] = {}  # see `count_after`

    @property
    def log_dir(self) -> Path:
        return self.root / LOG_DIR

    def append(self, partition: int, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Write `rows` (records of one partition) as one parquet file; None when there are none.

        Every row needs an int ``offset`` and ``corrected_at``; a row without ``partition`` gets
        `partition`, one with another partition is refused (ValueError).
        """
        if not rows:
            return None
        rows = [{**row, "partition": row.get("partition", partition)} for row in rows]
        if any(int(row["partition"]) != partition for row in rows):
            raise ValueError(f"rows of another partition than {partition}")
        if any(row.get("corrected_at") is None or row.get("offset") is None for row in rows):
            raise ValueError("every correction needs corrected_at and offset")
        offsets = [int(row["offset"]) for row in rows]
        directory = self.log_dir / f"p={int(partition)}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{min(offsets):012d}-{max(offsets):012d}.parquet"
        atomic_write_bytes(path, _parquet_bytes(table_of(rows)))
        return path

    def _files(self) -> list[_LogFile]:
        """Every complete log file (temporary files of a write in progress start with a dot)."""
        if not self.log_dir.is_dir():
            return []
        files = []
        for directory in sorted(self.log_dir.iterdir()):
            match = _PARTITION_DIR.fullmatch(directory.name)
            if match is None or not directory.is_dir():
                continue
            for path in sorted(directory.iterdir()):
                name = _LOG_FILE.fullmatch(path.name)
                if name is not None:
                    files.append(_LogFile(path, int(match[1]), int(name[1]), int(name[2])))
        return files

    def high_offsets(self) -> dict[int, int]:
        """Per partition, the highest last offset in the file names (no file is read)."""
        high: dict[int, int] = {}
        for file in self._files():
            high[file.partition] = max(high.get(file.partition, -1), file.last)
        return high

    def count_after(self, offsets: Mapping[int, int]) -> int:
        """Distinct (partition, offset) rows with offset > offsets.get(partition, -1).

        Only the files whose range goes beyond that position are looked at, and of those only the offset
        column, read once per file and log instance (files are written once: a re-append of the same
        range replaces a file with the same records)."""
        beyond: dict[int, list[np.ndarray]] = {}
        for file in self._files():
            after = int(offsets.get(file.partition, -1))
            if file.last > after:
                column = self._offsets_of(file)
                beyond.setdefault(file.partition, []).append(column[column > after])
        return sum(len(np.unique(np.concatenate(parts))) for parts in beyond.values())

    def _offsets_of(self, file: _LogFile) -> np.ndarray:
        stat = file.path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._offsets.get(file.path)
        if cached is None or cached[0] != key:
            column = pq.read_table(file.path, columns=["offset"]).column(0).to_numpy()
            cached = self._offsets[file.path] = (key, column)
        return cached[1]

    def _read_positions(self) -> pd.DataFrame:
        """Every row of the log, deduped by (partition, offset), in log order."""
        tables = [pq.read_table(file.path, schema=CORRECTION_SCHEMA) for file in self._files()]
        if not tables:
            return empty_frame()
        frame = frame_of(pa.concat_tables(tables))
        return dedupe_positions(frame.sort_values(_POSITION, kind="stable")).reset_index(drop=True)

    def read(self) -> pd.DataFrame:
        """The latest correction per id (see `latest_per_id`), columns CORRECTION_COLUMNS, sorted by id."""
        return latest_per_id(self._read_positions())

    def snapshot(self) -> CorrectionsSnapshot:
        """`read()` frozen as ``root/snapshots/<sha256[:16]>.parquet`` (an existing file of the same content
        is reused)."""
        positions = self._read_positions()
        frame = latest_per_id(positions)
        sha = content_sha256(frame)
        directory = self.root / SNAPSHOT_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{sha[:16]}.parquet"
        if not path.is_file():
            atomic_write_bytes(path, _parquet_bytes(table_of(frame)))
        return CorrectionsSnapshot(
            path=path,
            sha256=sha,
            rows=len(frame),
            labels=label_counts(frame),
            high_offsets=high_offsets_of(positions),
            created_at=_now_ms(),
        )


# ---- the reference set ----------------------------------------------------------------------------


class ReferenceSet:
    """Corrections that joined the reference data after a successful cycle (root/reference/)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.directory = self.root / REFERENCE_DIR

    @property
    def index_path(self) -> Path:
        return self.directory / ACCEPTED_INDEX

    def _index(self) -> dict[str, Any]:
        try:
            return json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"cycles": {}}

    def cycles(self) -> dict[str, dict[str, Any]]:
        """Cycle id -> what joined (file, rows, snapshot, sha256, joined_at), in the order they joined."""
        return dict(self._index()["cycles"])

    def join(self, snapshot_path: Path, cycle: str) -> int:
        """Copy the snapshot's rows in as a new accepted file and record it in accepted.json; the rows
        joined. A cycle that already joined is not joined again (its recorded row count is returned)."""
        with locked(self.index_path):
            index = self._index()
            known = index["cycles"].get(cycle)
            if known is not None:
                return int(known["rows"])
            frame = latest_per_id(read_parquet_frame(Path(snapshot_path)))
            name = f"accepted-{len(index['cycles']):06d}-{_cycle_slug(cycle)}.parquet"
            atomic_write_bytes(self.directory / name, _parquet_bytes(table_of(frame)))
            index["cycles"][cycle] = {
                "file": name,
                "rows": len(frame),
                "snapshot": Path(snapshot_path).name,
                "sha256": content_sha256(frame),
                "joined_at": _now_ms(),
            }
            atomic_write_text(self.index_path, json.dumps(index, ensure_ascii=False, indent=2) + "\n")
            return len(frame)

    def frame(self) -> pd.DataFrame:
        """Every accepted correction, the latest per id (as `CorrectionsLog.read`)."""
        files = [self.directory / entry["file"] for entry in self._index()["cycles"].values()]
        if not files:
            return empty_frame()
        return latest_per_id(pd.concat([read_parquet_frame(path) for path in files], ignore_index=True))


def _cycle_slug(cycle: str) -> str:
    """The cycle id if it is a safe file-name part, otherwise a hash of it."""
    if _SAFE_CYCLE.fullmatch(cycle):
        return cycle
    return hashlib.blake2b(cycle.encode(), digest_size=8).hexdigest()
