"""`nomenclature sink sqlite` on a real broker: rows as produced, the latest result per item, corrections,
model events and registry records, undecodable records kept, and exactly once across re-runs and
re-delivery."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.registry.model_registry import ModelRecord
from streams.topics import CLASSIFIED, CORRECTIONS, MODELS, SHADOW
from tests.sink_support import DAY, classified, correction, encoded, model_event, new_topic, produce
from tests.support import Broker
from tools import cli
from tools.common import run_sync


def ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def counts(db: Path) -> dict[str, int]:
    tables = ("predictions", "items", "corrections", "models", "model_versions", "sink_errors")
    return {t: rows(db, f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in tables}


def write_registry(root: Path) -> None:
    """A registry index with two versions, as `models.registry.model_registry.ModelRegistry` writes it."""
    root.mkdir(parents=True)
    versions = {}
    for n, f1 in ((1, 0.91), (2, 0.93)):
        record = ModelRecord(
            version=f"m-{n}",
            artifact=f"m-{n}/model.joblib",
            artifact_sha256=f"{n}" * 64,
            featurizer_version="f-1",
            sklearn_version="1.5.0",
            data_sha256="d" * 64,
            data_rows={"product": 100 * n, "service": 50 * n},
            metrics={"macro_f1": f1, "accuracy": f1 + 0.01},
            created_at=f"2024-03-0{n}T00:00:00+00:00",
        )
        versions[record.version] = asdict(record)
    index = {"versions": versions, "aliases": {"champion": "m-2", "challenger": "m-1"}}
    (root / "registry.json").write_text(json.dumps(index))


async def _committed(
    bootstrap: str, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def test_sqlite_sink_rows_latest_items_and_exactly_once(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("NOMENCLATURE_BROKER_FLAVOR", broker.flavor)
    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path / "data"))
    predictions, corrections, models, shadow = (
        new_topic(broker.bootstrap, p, n) for p, n in (("pr", 3), ("co", 2), ("mo", 1), ("sh", 1))
    )

    # 300 items; 60 of them classified again later, by another model (a newer result); for 20 of those a
    # record at a higher offset carries an older classified_at (it is not the latest).
    first = [classified(i, DAY + timedelta(seconds=i)) for i in range(300)]
    newer = [
        classified(i + 1, DAY + timedelta(hours=1, seconds=i), item_id=first[i]["id"], model_version="m-9")
        for i in range(60)
    ]
    stale = [classified(i + 2, DAY - timedelta(hours=1), item_id=first[i]["id"]) for i in range(20)]
    values = first + newer + stale
    spots = produce(broker.bootstrap, predictions, encoded(CLASSIFIED, values))
    produce(broker.bootstrap, predictions, [(b"junk", b"\x01not avro", None)])
    stamp = ms(DAY + timedelta(days=1))
    fixes = [correction(first[i]["id"], "service", DAY + timedelta(minutes=i)) for i in range(10)]
    fixes += [correction(first[0]["id"], "product", DAY + timedelta(hours=2))]  # the latest of item 0
    fixes += [correction(first[20]["id"], "product", None)]  # dated by its Kafka timestamp
    fix_records = [(k, v, stamp) for k, v, _ in encoded(CORRECTIONS, fixes)]
    produce(broker.bootstrap, corrections, fix_records)
    events = [model_event("m-1", "registered", DAY), model_event("m-1", "promoted", DAY + timedelta(hours=1))]
    produce(broker.bootstrap, models, encoded(MODELS, events))
    # the challenger's result is newest of all, but only the champion's results make `items`
    challenger = classified(7, DAY + timedelta(days=3), item_id=first[1]["id"], model_version="m-challenger")
    header = ("nomenclature-replay", b'{"replay": "r-1"}')
    produce(broker.bootstrap, shadow, encoded(CLASSIFIED, [challenger]), headers=[header])
    write_registry(tmp_path / "registry")

    db = tmp_path / "ml_store.db"
    argv = [
        "sink",
        "sqlite",
        "--db",
        str(db),
        "--models-dir",
        str(tmp_path / "registry"),
        "--once",
        "--topics",
    ]
    argv += [f"{predictions}={CLASSIFIED}", f"{corrections}={CORRECTIONS}", f"{models}={MODELS}"]
    argv += [f"{shadow}={SHADOW}"]
    capsys.readouterr()
    cli.main([*argv, "--flush-rows", "50"])
    summary = json.loads(capsys.readouterr().out)

    assert summary["records"] == len(values) + 1 + len(fixes) + len(events) + 1
    assert (summary["predictions"], summary["undecodable"], summary["duplicates"]) == (len(values) + 1, 1, 0)
    assert counts(db) == {
        "predictions": 381,
        "items": 300,
        "corrections": 12,
        "models": 2,
        "model_versions": 2,
        "sink_errors": 1,
    }
    shadowed = rows(db, f"SELECT * FROM predictions WHERE kafka_topic = '{shadow}'")
    assert [(r["id"], r["model_version"]) for r in shadowed] == [(first[1]["id"], "m-challenger")]
    assert json.loads(shadowed[0]["kafka_headers"]) == [["nomenclature-replay", '{"replay": "r-1"}']]
    query = f"SELECT * FROM predictions WHERE kafka_topic = '{predictions}'"
    stored = {(r["kafka_partition"], r["kafka_offset"]): r for r in rows(db, query)}
    assert set(stored) == set(spots)
    for spot, value in zip(spots, values, strict=True):
        row = stored[spot]
        assert (row["id"], row["kafka_key"], row["name"], row["unit"]) == (
            value["id"],
            value["id"],
            value["item"]["name"],
            value["item"]["unit"],
        )
        assert (row["label"], row["confidence"], row["model_version"]) == (
            value["label"],
            value["confidence"],
            value["model_version"],
        )
        assert json.loads(row["probabilities"]) == value["probabilities"]
        assert json.loads(row["top_k"]) == value["top_k"]
        assert row["classified_at"] == ms(value["classified_at"])
        assert row["created_at"] == ms(value["item"]["created_at"])
        assert row["kafka_headers"] is None

    items = {r["id"]: r for r in rows(db, "SELECT * FROM items")}
    latest = {v["id"]: v for v in first} | {v["id"]: v for v in newer}  # newer results win; stale ones do not
    assert {i: (r["label"], r["model_version"], r["classified_at"]) for i, r in items.items()} == {
        i: (v["label"], v["model_version"], ms(v["classified_at"])) for i, v in latest.items()
    }
    assert items[first[5]["id"]]["name"] == newer[5]["item"]["name"]

    by_id = {r["id"]: r for r in rows(db, "SELECT * FROM latest_corrections")}
    assert len(by_id) == 11 and by_id[first[0]["id"]]["label"] == "product"
    assert (by_id[first[20]["id"]]["corrected_at"], by_id[first[20]["id"]]["corrected_at_given"]) == (
        stamp,
        0,
    )
    assert by_id[first[3]["id"]]["corrected_at"] == ms(DAY + timedelta(minutes=3))
    assert by_id[first[3]["id"]]["unit"] == "шт" and by_id[first[3]["id"]]["user"] == "tester"
    corrected = rows(
        db, "SELECT id, label, corrected_label FROM items_corrected WHERE corrected_label IS NOT NULL"
    )
    assert len(corrected) == 11
    assert [(r["event"], r["version"]) for r in rows(db, "SELECT * FROM models ORDER BY kafka_offset")] == [
        ("registered", "m-1"),
        ("promoted", "m-1"),
    ]
    registry = {r["version"]: r for r in rows(db, "SELECT * FROM model_versions")}
    assert (registry["m-2"]["aliases"], registry["m-2"]["macro_f1"], registry["m-2"]["data_rows"]) == (
        "champion",
        0.93,
        300,
    )
    error = rows(db, "SELECT * FROM sink_errors")[0]
    assert (error["kafka_key"], error["value"], error["error_code"]) == (
        b"junk",
        b"\x01not avro",
        "bad_magic_byte",
    )

    offsets = {(r["topic"], r["partition"]): r["next_offset"] for r in rows(db, "SELECT * FROM sink_offsets")}
    tps = [TopicPartition(t, p) for t, p in offsets]
    committed = run_sync(_committed(broker.bootstrap, "nomenclature-sink-sqlite", tps))
    assert {(tp.topic, tp.partition): o for tp, o in committed.items()} == offsets, "positions visible"
    assert sum(o for (t, _), o in offsets.items() if t == predictions) == len(values) + 1

    snapshot = rows(db, "SELECT * FROM items ORDER BY id")
    capsys.readouterr()
    cli.main(argv)
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["records"] == 0 and counts(db)["predictions"] == 381, "a re-run reads nothing again"

    # re-delivery: without its positions the sink reads everything again, and writes nothing twice
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM sink_offsets")
    conn.commit()
    conn.close()
    capsys.readouterr()
    cli.main(argv)
    again = json.loads(capsys.readouterr().out)
    assert again["records"] == summary["records"] and again["duplicates"] == 381 + 12 + 2
    assert (again["predictions"], again["corrections"], again["models"]) == (0, 0, 0)
    assert counts(db)["predictions"] == 381 and counts(db)["corrections"] == 12
    assert rows(db, "SELECT * FROM items ORDER BY id") == snapshot

    # more traffic later: only the new records are added
    later = [classified(900, DAY + timedelta(days=2), item_id=first[7]["id"], label="service")]
    produce(broker.bootstrap, predictions, encoded(CLASSIFIED, later))
    capsys.readouterr()
    cli.main(argv)
    assert json.loads(capsys.readouterr().out)["predictions"] == 1
    assert rows(db, f"SELECT label FROM items WHERE id = '{first[7]['id']}'") == [{"label": "service"}]
    assert rows(db, "PRAGMA journal_mode") == [{"journal_mode": "wal"}]

    # positions past a partition's end: the topic was recreated, and its new records would be ignored
    conn = sqlite3.connect(db)
    conn.execute("UPDATE sink_offsets SET next_offset = 1000000 WHERE topic = ?", (models,))
    conn.commit()
    conn.close()
    with pytest.raises(
        SystemExit, match=r"resume at offset 1000000 but the partition ends at 2: was the topic"
    ):
        cli.main(argv)


def test_sqlite_sink_refuses_a_topic_it_has_no_table_for(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"has no table for .nomenclature\.raw."):
        cli.main(["sink", "sqlite", "--db", str(tmp_path / "x.db"), "--topics", "nomenclature.raw", "--once"])
    assert not (tmp_path / "x.db").exists()
