"""``nomenclature produce``: publish the rows of export files as items (or corrections), with a report.

Every file is opened and its headers mapped before anything is sent, so a bad file, an unknown encoding or
an ambiguous header stops the run with nothing published. Then the files are sent one after the other; the
report (JSON on stdout) has, per file and in total, the rows read, records made and sent, and the skipped
rows with their reasons (`connectors.files.source`).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from connectors.files.column_mapping import CORRECTION_FIELDS, ITEM_FIELDS, load_overrides
from connectors.files.source import SourceFile, SourceOptions, expand_inputs, open_source
from schemas import Catalogue
from streams.topics import CORRECTIONS, is_raw_topic

TOTAL_KEYS = ("rows_read", "records", "sent", "skipped")


def source_options(
    topic: str, mapping: Path | None, encoding: str | None, sheet: str | None
) -> SourceOptions:
    if topic != CORRECTIONS and not is_raw_topic(topic):
        raise ValueError(
            f"produce publishes items to nomenclature.raw or nomenclature.raw.<source>, or corrections to "
            f"{CORRECTIONS}; not to {topic!r}"
        )
    overrides = load_overrides(mapping) if mapping is not None else None
    fields = CORRECTION_FIELDS if topic == CORRECTIONS else ITEM_FIELDS
    return SourceOptions(encoding=encoding, sheet=sheet, overrides=overrides, fields=fields)


def check_sources(files: Iterable[tuple[Path, str]], options: SourceOptions) -> None:
    """Open each file and map its headers (raising what would stop it), then close it again."""
    for path, label in files:
        open_source(path, options, label).close()


def produce_files(
    bootstrap: str,
    topic: str,
    inputs: list[Path],
    catalogue: Catalogue,
    options: SourceOptions,
    *,
    rate: float | None = None,
    dry_run: bool = False,
    progress: Any = sys.stderr,
    partitions: int = 8,
    replication_factor: int = 1,
) -> dict[str, Any]:
    """Send every input file's records to ``topic``; returns the report.

    A missing topic is created first with ``partitions`` (brokers that do not create topics on first use,
    as Apache Kafka is configured here, would otherwise hold the records until the send times out)."""
    from connectors.kafka_io import ensure_topic, produce_items
    from tools.common import run_sync

    files = expand_inputs(inputs)
    check_sources(files, options)
    created = not dry_run and run_sync(ensure_topic(bootstrap, topic, partitions, replication_factor))
    if created and progress is not None:
        print(f"created topic {topic} with {partitions} partitions", file=progress, flush=True)
    reports = []
    for path, label in files:
        source = open_source(path, options, label)
        try:
            records = _records(source, topic)
            if dry_run:
                sent = 0
                for _ in records:
                    pass
            else:
                sent = run_sync(produce_items(bootstrap, topic, records, catalogue, rate=rate))
        finally:
            source.close()
        report = source.report.as_dict() | {"sent": sent}
        reports.append(report)
        if progress is not None:
            print(
                f"{label}: {report['rows_read']} rows read, {report['records']} records, {sent} sent, "
                f"{report['skipped']} skipped",
                file=progress,
                flush=True,
            )
    return {
        "topic": topic,
        "created_topic": created,
        "dry_run": dry_run,
        "files": reports,
        "totals": totals(reports),
    }


def totals(reports: list[dict[str, Any]]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for report in reports:
        reasons.update(report["skipped_by_reason"])
    out: dict[str, Any] = {"files": len(reports)}
    out.update({key: sum(report[key] for report in reports) for key in TOTAL_KEYS})
    out["skipped_by_reason"] = dict(sorted(reasons.items()))
    return out


def _records(source: SourceFile, topic: str) -> Iterator[dict[str, Any]]:
    if topic != CORRECTIONS:
        return source.records()
    from streams.lifecycle.corrections import correction_value

    return (correction_value(row) for row in source.records())
