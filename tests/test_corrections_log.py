"""The corrections log and the reference set (models/retraining/corrections_log.py): files, dedupe, latest per
id, positions, snapshots, joining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from models.retraining.corrections_log import (
    CORRECTION_COLUMNS,
    CORRECTION_SCHEMA,
    CorrectionsLog,
    ReferenceSet,
    new_corrections,
    read_parquet_frame,
)

BASE_MS = 1_760_000_000_000


def correction(
    item_id: str, label: str, offset: int, partition: int = 0, at: int = 0, **extra: Any
) -> dict[str, Any]:
    return {
        "id": item_id,
        "name": f"Вывоз мусора {item_id}",
        "label": label,
        "user": "tester",
        "corrected_at": BASE_MS + at,
        "topic": "nomenclature.corrections",
        "partition": partition,
        "offset": offset,
        **extra,
    }


@pytest.fixture
def log(tmp_path: Path) -> CorrectionsLog:
    return CorrectionsLog(tmp_path / "corrections")


def test_columns_and_schema_match() -> None:
    assert CORRECTION_COLUMNS[:4] == ("id", "name", "full_name", "label")
    assert CORRECTION_COLUMNS[-4:] == ("corrected_at", "topic", "partition", "offset")
    assert len(CORRECTION_COLUMNS) == 19
    assert tuple(CORRECTION_SCHEMA.names) == CORRECTION_COLUMNS


def test_append_writes_one_named_file_and_read_returns_the_rows(log: CorrectionsLog) -> None:
    rows = [correction("a", "service", 7, unit="шт", comment=None), correction("b", "product", 9)]
    path = log.append(0, rows)
    assert path == log.root / "log" / "p=0" / "000000000007-000000000009.parquet"
    assert pq.read_table(path).schema.equals(CORRECTION_SCHEMA)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    frame = log.read()
    assert list(frame.columns) == list(CORRECTION_COLUMNS)
    assert frame["id"].tolist() == ["a", "b"]
    first = frame.iloc[0]
    assert (first["unit"], first["full_name"], first["offset"], first["partition"]) == ("шт", None, 7, 0)
    assert log.append(0, []) is None


def test_empty_log_reads_as_an_empty_frame_with_the_columns(log: CorrectionsLog) -> None:
    frame = log.read()
    assert frame.empty and list(frame.columns) == list(CORRECTION_COLUMNS)
    assert log.high_offsets() == {} and log.count_after({}) == 0


def test_rows_of_another_partition_or_without_positions_are_refused(log: CorrectionsLog) -> None:
    with pytest.raises(ValueError, match="partition"):
        log.append(1, [correction("a", "service", 1, partition=2)])
    with pytest.raises(ValueError, match="corrected_at"):
        log.append(1, [{**correction("a", "service", 1, partition=1), "corrected_at": None}])


def test_a_reappended_record_counts_once(log: CorrectionsLog) -> None:
    log.append(0, [correction("a", "service", 0), correction("b", "service", 1)])
    # after a crash the same offsets come again, in the same range and inside a wider one
    log.append(0, [correction("a", "service", 0), correction("b", "service", 1)])
    log.append(0, [correction("b", "service", 1), correction("c", "product", 2)])
    assert len(list((log.root / "log" / "p=0").glob("*.parquet"))) == 2
    assert log.read()["id"].tolist() == ["a", "b", "c"]
    assert log.count_after({}) == 3
    # a re-append of a range may hold a record the first write of it lacked (the file is replaced)
    log.append(0, [correction("d", "service", 3), correction("f", "service", 5)])
    assert log.count_after({0: 2}) == 2
    log.append(
        0, [correction("d", "service", 3), correction("e", "service", 4), correction("f", "service", 5)]
    )
    assert log.count_after({0: 2}) == 3 and len(log.read()) == 6


def test_latest_correction_per_id_wins_by_corrected_at_then_position(log: CorrectionsLog) -> None:
    log.append(0, [correction("a", "service", 0, at=50), correction("b", "service", 1, at=10)])
    # a later offset with an earlier corrected_at does not win; a later corrected_at does
    log.append(1, [correction("a", "product", 0, partition=1, at=20), correction("b", "product", 1, 1, 30)])
    # equal corrected_at: the later position (partition, offset) wins
    log.append(0, [correction("c", "service", 2, at=5)])
    log.append(1, [correction("c", "product", 2, partition=1, at=5)])
    labels = dict(zip(log.read()["id"], log.read()["label"], strict=True))
    assert labels == {"a": "service", "b": "product", "c": "product"}


def test_high_offsets_and_count_after_follow_the_file_names(log: CorrectionsLog) -> None:
    log.append(0, [correction("a", "service", 0), correction("b", "service", 4)])
    log.append(0, [correction("c", "service", 5)])
    log.append(3, [correction("d", "product", 10, partition=3), correction("e", "product", 12, partition=3)])
    assert log.high_offsets() == {0: 5, 3: 12}
    assert log.count_after({}) == 5
    assert log.count_after({0: 4}) == 3  # c, d, e
    assert log.count_after({0: 5, 3: 10}) == 1  # e (d is at 10, not after it)
    assert log.count_after(log.high_offsets()) == 0
    # a file whose range ends at or before the position is not even opened
    (log.root / "log" / "p=0" / "000000000000-000000000004.parquet").write_bytes(b"not parquet")
    assert log.count_after({0: 4, 3: 12}) == 1


def test_snapshot_is_content_addressed(log: CorrectionsLog) -> None:
    log.append(0, [correction("a", "service", 0), correction("b", "product", 1)])
    first = log.snapshot()
    assert first.path == log.root / "snapshots" / f"{first.sha256[:16]}.parquet"
    assert (first.rows, first.labels, first.high_offsets) == (2, {"product": 1, "service": 1}, {0: 1})
    assert pq.read_table(first.path).column("id").to_pylist() == ["a", "b"]
    # re-appended offsets change nothing: same content, same hash, same file
    log.append(0, [correction("b", "product", 1)])
    again = log.snapshot()
    assert (again.sha256, again.path) == (first.sha256, first.path)
    assert len(list(first.path.parent.iterdir())) == 1
    # the same rows stored differently (other partition files, other order) hash the same
    other = CorrectionsLog(log.root.parent / "other")
    other.append(0, [correction("b", "product", 1)])
    other.append(0, [correction("a", "service", 0)])
    assert other.snapshot().sha256 == first.sha256
    # new content, new hash and file
    log.append(2, [correction("c", "service", 0, partition=2)])
    changed = log.snapshot()
    assert changed.sha256 != first.sha256 and changed.path != first.path and first.path.is_file()
    assert changed.high_offsets == {0: 1, 2: 0}
    # a changed label of one id is new content too
    log.append(0, [correction("a", "product", 2, at=1)])
    assert log.snapshot().sha256 not in {first.sha256, changed.sha256}


def test_reference_join_is_idempotent_per_cycle_and_defines_new_corrections(log: CorrectionsLog) -> None:
    reference = ReferenceSet(log.root)
    assert reference.frame().empty and list(reference.frame().columns) == list(CORRECTION_COLUMNS)
    log.append(0, [correction("a", "service", 0), correction("b", "service", 1)])
    first = log.snapshot()
    assert reference.join(first.path, "cycle-1") == 2
    assert reference.join(first.path, "cycle-1") == 2  # the same cycle again: nothing added
    index = json.loads((log.root / "reference" / "accepted.json").read_text(encoding="utf-8"))
    assert list(index["cycles"]) == ["cycle-1"] and index["cycles"]["cycle-1"]["rows"] == 2
    assert len(list((log.root / "reference").glob("accepted-*.parquet"))) == 1
    assert reference.frame()["id"].tolist() == ["a", "b"]
    assert new_corrections(log.read(), reference.frame()).empty

    # b corrected again (a later corrected_at), c is new: those two are the next cycle's new corrections
    log.append(0, [correction("b", "product", 2, at=100), correction("c", "service", 3)])
    second = log.snapshot()
    fresh = new_corrections(read_parquet_frame(second.path), reference.frame())
    assert fresh["id"].tolist() == ["b", "c"] and fresh["label"].tolist() == ["product", "service"]
    # the same id, label and time is not new even from another position (a re-published correction)
    log.append(1, [correction("a", "service", 0, partition=1)])
    assert new_corrections(log.read(), reference.frame())["id"].tolist() == ["b", "c"]

    assert reference.join(second.path, "cycle 2/retry") == 3  # an id unsafe as a file name is hashed
    assert list(reference.cycles()) == ["cycle-1", "cycle 2/retry"]
    accepted = reference.frame()
    assert dict(zip(accepted["id"], accepted["label"], strict=True)) == {
        "a": "service",
        "b": "product",
        "c": "service",
    }
    assert new_corrections(log.read(), accepted).empty
