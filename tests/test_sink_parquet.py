"""`nomenclature sink parquet` on a real broker: exactly once across kill -9, a crash between the files and
the commit and a crash inside a flush; date partitions; undecodable records in `_errors`; guards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.sinks.avro_columns import RecordColumns, UnsupportedSchemaError
from connectors.sinks.parquet import ERRORS_DIR, ParquetSink
from connectors.sinks.topic_consumer import ConsumeOptions, run, topic_spec
from schemas import LocalCatalogue
from streams.topics import CLASSIFIED, RAW
from tests.sink_support import DAY, classified, encoded, new_topic, produce
from tests.support import ROOT, Broker, item_serde, make_item
from tools import cli
from tools.common import run_sync


def dataset(root: Path) -> pd.DataFrame:
    """Every row of a sink's dataset (not `_errors`), read as users read it."""
    if not any(root.glob("date=*/*.parquet")):
        return pd.DataFrame(columns=["kafka_partition", "kafka_offset"])
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()


def positions(frame: pd.DataFrame) -> Counter[tuple[int, int]]:
    return Counter(zip(frame["kafka_partition"].astype(int), frame["kafka_offset"].astype(int), strict=True))


def assert_rows_equal(frame: pd.DataFrame, produced: dict[tuple[int, int], dict[str, Any]]) -> None:
    """Each row holds the value produced at its (partition, offset), field by field."""
    for row in frame.to_dict("records"):
        value = produced[(int(row["kafka_partition"]), int(row["kafka_offset"]))]
        item = value["item"]
        assert row["id"] == value["id"] == row["kafka_key"]
        assert (row["item_name"], row["item_unit"], row["item_source"]) == (
            item["name"],
            item["unit"],
            item["source"],
        )
        assert row["item_created_at"].to_pydatetime() == item["created_at"]
        assert pd.isna(row["item_type_hint"]) and item["type_hint"] is None
        assert (row["label"], row["confidence"], row["model_version"]) == (
            value["label"],
            value["confidence"],
            value["model_version"],
        )
        assert dict(row["probabilities"]) == value["probabilities"]
        assert list(row["top_k"]) == value["top_k"]
        assert list(row["explanation"]) == value["explanation"]
        assert list(row["warnings"]) == value["warnings"]
        assert (row["source_partition"], row["source_offset"]) == (
            value["source"]["partition"],
            value["source"]["offset"],
        )
        assert row["classified_at"].to_pydatetime() == value["classified_at"]
        assert row["date"] == value["classified_at"].date().isoformat()


def sink_env(broker: Broker, tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        NOMENCLATURE_BROKER_FLAVOR=broker.flavor,
        NOMENCLATURE_DATA_DIR=str(tmp_path / "data"),
        NOMENCLATURE_LOG_LEVEL="warning",
    )


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    cli.main(argv)
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def cli_env(broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sink_env(broker, tmp_path).items():
        monkeypatch.setenv(name, value)


def test_kill9_mid_stream_and_restart_write_every_record_exactly_once(broker: Broker, tmp_path: Path) -> None:
    topic = new_topic(broker.bootstrap, "sink-kill", 4)
    values = [classified(i, DAY + timedelta(minutes=3 * i)) for i in range(5000)]  # ten days
    records = encoded(CLASSIFIED, values)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tools.cli", "sink", "parquet", "--topic", topic, "--schema", CLASSIFIED]
    command += ["--out", str(out), "--flush-rows", "60", "--flush-seconds", "0.2"]
    env = sink_env(broker, tmp_path)
    log = (tmp_path / "sink.log").open("w+")
    sink = subprocess.Popen([*command, "--follow"], cwd=ROOT, env=env, stdout=log, stderr=log)
    root = out / topic
    try:
        deadline = time.monotonic() + 30
        while "resuming" not in (tmp_path / "sink.log").read_text():
            assert sink.poll() is None and time.monotonic() < deadline, (tmp_path / "sink.log").read_text()
            time.sleep(0.05)
        produced: dict[tuple[int, int], dict[str, Any]] = {}
        done = threading.Event()

        def publish() -> None:
            for start in range(0, len(records), 200):  # 25 chunks, 0.1 s apart
                chunk = records[start : start + 200]
                spots = produce(broker.bootstrap, topic, chunk)
                produced.update(zip(spots, values[start : start + 200], strict=True))
                time.sleep(0.1)
            done.set()

        producer = threading.Thread(target=publish)
        producer.start()
        while len(list(root.glob("date=*/*.parquet"))) < 12:
            assert sink.poll() is None, (tmp_path / "sink.log").read_text()
            time.sleep(0.02)
        sink.send_signal(signal.SIGKILL)
        sink.wait()
        assert not done.is_set(), "the sink was killed after the last record was produced: not mid-stream"
        producer.join()
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    before = dataset(root)
    assert 0 < len(before) < len(values)

    restart = subprocess.run(
        [*command, "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert restart.returncode == 0, restart.stderr
    summary = json.loads(restart.stdout)
    after = dataset(root)
    assert len(produced) == len(values)
    assert positions(after) == Counter(produced.keys()), "a (partition, offset) is missing or written twice"
    assert_rows_equal(after, produced)
    assert summary["rows"] == summary["records"] == len(values) - len(before) + summary["removed_rows"]
    assert not list(root.rglob(".*.tmp"))


def test_sigterm_flushes_what_was_read_and_prints_the_summary(broker: Broker, tmp_path: Path) -> None:
    topic = new_topic(broker.bootstrap, "sink-term", 2)
    command = [sys.executable, "-m", "tools.cli", "sink", "parquet", "--topic", topic, "--schema", CLASSIFIED]
    command += ["--out", str(tmp_path), "--follow", "--flush-rows", "100000", "--flush-seconds", "600"]
    command += ["--progress-seconds", "0.1"]
    log_path = tmp_path / "sink.log"
    with log_path.open("w") as log, (tmp_path / "summary.json").open("w") as out:
        sink = subprocess.Popen(command, cwd=ROOT, env=sink_env(broker, tmp_path), stdout=out, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while "resuming" not in log_path.read_text():
                assert sink.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            spots = produce(
                broker.bootstrap, topic, encoded(CLASSIFIED, [classified(i, DAY) for i in range(100)])
            )
            while "100 records read" not in log_path.read_text():
                assert sink.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            assert not list(tmp_path.glob(f"{topic}/date=*/*.parquet")), "nothing is flushed before SIGTERM"
            sink.send_signal(signal.SIGTERM)
            assert sink.wait(30) == 0, log_path.read_text()
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["mode"], summary["records"], summary["rows"]) == ("follow", 100, 100)
    assert positions(dataset(tmp_path / topic)) == Counter(spots)
    committed = run_sync(_committed(broker.bootstrap, f"nomenclature-sink-parquet-{topic}", topic, 2))
    assert sum(o or 0 for o in committed.values()) == 100


class _Crash(Exception):
    pass


class _CommitLost(ParquetSink):
    """Crashes after its second flush's files are written and before the sink commits their offsets."""

    flushes = 0

    def flush(self) -> dict[TopicPartition, int]:
        flushed = super().flush()
        self.flushes += 1
        if self.flushes == 2:
            raise _Crash
        return flushed


class _TornFlush(ParquetSink):
    """Crashes inside its second flush, after one file of it has been renamed into place."""

    flushes = 0
    files_in_flush = 0

    def flush(self) -> dict[TopicPartition, int]:
        self.flushes += 1
        self.files_in_flush = 0
        return super().flush()

    def _write_file(self, path: Path, table: Any) -> None:
        if self.flushes == 2 and self.files_in_flush == 1:
            raise _Crash
        super()._write_file(path, table)
        self.files_in_flush += 1


def _drain(sink_class: type[ParquetSink], broker: Broker, out: Path, topic: str, flush_rows: int) -> Any:
    sink = sink_class(
        out, topic_spec(topic, CLASSIFIED), LocalCatalogue(), "g-" + topic, log=lambda line: None
    )
    options = ConsumeOptions(broker.bootstrap, "g-" + topic, once=True, flush_rows=flush_rows)
    with sink:
        return run_sync(run(sink, [topic], options, log=lambda line: None))


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    "crash", [_CommitLost, _TornFlush], ids=["after-rename-before-commit", "inside-flush"]
)
def test_a_crash_at_either_point_of_a_flush_neither_loses_nor_duplicates(
    broker: Broker, tmp_path: Path, crash: type[ParquetSink]
) -> None:
    topic = new_topic(broker.bootstrap, "sink-crash", 1)
    # two dates interleaved, so that every flush of the one partition writes two files
    values = [classified(i, DAY + timedelta(days=i % 2)) for i in range(400)]
    spots = produce(broker.bootstrap, topic, encoded(CLASSIFIED, values))
    out = tmp_path / "out"
    root = out / topic
    with pytest.raises(_Crash):
        _drain(crash, broker, out, topic, flush_rows=100)
    committed = run_sync(_committed(broker.bootstrap, "g-" + topic, topic, 1))[0]
    assert committed == 100, "the first flush is committed, the second is not"
    written = dataset(root)
    if crash is _CommitLost:
        assert len(written) == 200, "the second flush's files are in place although uncommitted"
    else:
        assert len(list(root.glob("date=*/*.parquet"))) == 3, "one file of the second flush is in place"

    summary = _drain(ParquetSink, broker, out, topic, flush_rows=1000)
    after = dataset(root)
    assert positions(after) == Counter(spots)
    assert_rows_equal(after, dict(zip(spots, values, strict=True)))
    if crash is _CommitLost:
        assert summary["partitions"][f"{topic}[0]"]["from"] == 200, "resumed from the files, not the commit"
        assert summary["removed_interrupted_files"] == 0
    else:
        assert summary["partitions"][f"{topic}[0]"]["from"] == 100
        assert summary["removed_interrupted_files"] == 1 and summary["removed_rows"] == 50


def test_dates_from_classified_at_and_undecodable_records_in_errors(
    broker: Broker, tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic(broker.bootstrap, "sink-dates", 2)
    late = datetime(2024, 3, 1, 23, 59, 59, 999000, tzinfo=UTC)
    early = datetime(2024, 3, 2, tzinfo=UTC)
    values = [classified(i, late if i % 2 else early) for i in range(40)]
    header = ("nomenclature-replay", b'{"replay": "r-1"}')
    spots = produce(broker.bootstrap, topic, encoded(CLASSIFIED, values), headers=[header])
    good = encoded(CLASSIFIED, [classified(99, early)])[0][1]
    assert good is not None
    bad = [
        (b"junk", b"\x01not avro", None),
        (b"empty", b"", None),
        (b"tombstone", None, None),
        (b"cut", good[:-7], None),
        (b"\xff\xfe-key", good, None),
    ]
    bad_spots = produce(broker.bootstrap, topic, bad, partition=1)
    out = tmp_path / "out"
    argv = ["sink", "parquet", "--topic", topic, "--schema", CLASSIFIED, "--out", str(out), "--once"]

    summary = run_cli(argv, capsys)
    root = out / topic
    assert sorted(p.name for p in root.glob("date=*")) == ["date=2024-03-01", "date=2024-03-02"]
    for day in ("2024-03-01", "2024-03-02"):
        frame = pq.read_table(root / f"date={day}").to_pandas()
        assert len(frame) == 20
        assert set(frame["classified_at"].dt.strftime("%Y-%m-%d")) == {day}
    rows = dataset(root)
    assert positions(rows) == Counter(spots), "only the decodable records are in the dataset"
    assert_rows_equal(rows, dict(zip(spots, values, strict=True)))
    assert all(list(h) == [header] for h in rows["kafka_headers"])

    errors = ds.dataset(root / ERRORS_DIR, format="parquet", partitioning="hive").to_table().to_pandas()
    by_offset = {int(r["kafka_offset"]): r for r in errors.to_dict("records")}
    assert sorted(by_offset) == sorted(offset for _, offset in bad_spots)
    found = {(r["kafka_key"], r["value"]): r["error_code"] for r in by_offset.values()}
    assert found == {
        (b"junk", b"\x01not avro"): "bad_magic_byte",
        (b"empty", b""): "empty_payload",
        (b"tombstone", None): "empty_payload",
        (b"cut", good[:-7]): "truncated_avro",
        (b"\xff\xfe-key", good): "invalid_key_utf8",
    }
    assert all(r["error_message"] and list(r["kafka_headers"]) == [] for r in by_offset.values())
    assert summary["undecodable"] == 5 and summary["rows"] == 40 and summary["records"] == 45

    again = run_cli(argv, capsys)
    assert again["records"] == 0 and again["files"] == 0, "a second drain finds nothing new"
    assert len(dataset(root)) == 40


def test_other_schemas_are_dated_by_the_kafka_timestamp(
    broker: Broker, tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic(broker.bootstrap, "sink-raw", 1)
    codec = item_serde()
    items = [make_item(f"r-{i}", f"Гайка М{i}", unit="шт", created_at=DAY) for i in range(6)]
    stamps = [int((DAY + timedelta(days=i % 3)).timestamp() * 1000) for i in range(6)]
    produce(
        broker.bootstrap,
        topic,
        [(i["id"].encode(), codec.encode(i), t) for i, t in zip(items, stamps, strict=True)],
    )

    summary = run_cli(
        ["sink", "parquet", "--topic", topic, "--schema", RAW, "--out", str(tmp_path), "--once"], capsys
    )
    frame = dataset(tmp_path / topic).sort_values("kafka_offset")
    assert summary["dates"] == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert list(frame["date"]) == [(DAY + timedelta(days=i % 3)).date().isoformat() for i in range(6)]
    assert list(frame["name"]) == [i["name"] for i in items]
    assert str(frame["created_at"].dtype) == "datetime64[ms, UTC]" and (frame["created_at"] == DAY).all()
    assert [int(t.timestamp() * 1000) for t in frame["kafka_timestamp"]] == stamps


def test_a_dataset_is_guarded_against_other_writers_and_groups(
    broker: Broker, tmp_path: Path, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic(broker.bootstrap, "sink-guard", 1)
    produce(broker.bootstrap, topic, encoded(CLASSIFIED, [classified(i, DAY) for i in range(10)]))
    base = ["sink", "parquet", "--topic", topic, "--schema", CLASSIFIED, "--once"]
    run_cli([*base, "--out", str(tmp_path / "a")], capsys)

    with pytest.raises(SystemExit, match=r"new dataset but consumer group .* already committed offsets"):
        cli.main([*base, "--out", str(tmp_path / "b")])
    assert not list((tmp_path / "b").rglob("*.parquet"))
    resumed = run_cli([*base, "--out", str(tmp_path / "b"), "--resume-committed"], capsys)
    assert resumed["partitions"][f"{topic}[0]"]["from"] == 10 and resumed["records"] == 0

    # b is ahead of a in their shared group: a's files, not the group's offset, say where a resumes
    produce(broker.bootstrap, topic, encoded(CLASSIFIED, [classified(i, DAY) for i in range(10, 15)]))
    assert run_cli([*base, "--out", str(tmp_path / "b")], capsys)["records"] == 5
    capsys.readouterr()
    cli.main([*base, "--out", str(tmp_path / "a")])
    output = capsys.readouterr()
    caught_up = json.loads(output.out)
    assert caught_up["partitions"][f"{topic}[0]"]["from"] == 10 and caught_up["records"] == 5
    assert positions(dataset(tmp_path / "a" / topic)) == Counter((0, o) for o in range(15))
    assert "committed offset 15, past the files' 10" in output.err

    with pytest.raises(SystemExit, match="is written by consumer group"):
        cli.main([*base, "--out", str(tmp_path / "a"), "--group", "another"])
    with ParquetSink(tmp_path / "a", topic_spec(topic, CLASSIFIED), LocalCatalogue(), "x"):
        with pytest.raises(SystemExit, match="another sink is writing"):
            cli.main([*base, "--out", str(tmp_path / "a")])
    with pytest.raises(
        SystemExit, match="not a topic of this service; name its records' schema with --schema"
    ):
        cli.main(["sink", "parquet", "--topic", topic, "--out", str(tmp_path / "c"), "--once"])


def test_columns_of_any_avro_schema_are_flattened_and_typed() -> None:
    schema = {
        "type": "record",
        "name": "Probe",
        "namespace": "t",
        "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b"]}},
            {"name": "again", "type": ["null", "Kind"]},
            {"name": "either", "type": ["null", "long", "string"]},
            {
                "name": "where",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Spot",
                        "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "double"}],
                    },
                ],
            },
            {"name": "spots", "type": {"type": "array", "items": "t.Spot"}},
            {"name": "scores", "type": {"type": "map", "values": "float"}},
            {"name": "raw", "type": "bytes"},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        ],
    }
    columns = RecordColumns(schema)
    assert {c.name: str(c.type) for c in columns.columns} == {
        "kind": "string",
        "again": "string",
        "either": "string",
        "where_x": "int32",
        "where_y": "double",
        "spots": "list<item: struct<x: int32, y: double>>",
        "scores": "map<string, float>",
        "raw": "binary",
        "day": "date32[day]",
    }
    values = [
        {
            "kind": "a",
            "again": None,
            "either": 5,
            "where": {"x": 1, "y": 0.5},
            "spots": [{"x": 2, "y": 1.5}],
            "scores": {"p": 0.25},
            "raw": b"\x00\xff",
            "day": date(2024, 3, 1),
        },
        {
            "kind": "b",
            "again": "a",
            "either": "five",
            "where": None,
            "spots": [],
            "scores": {},
            "raw": b"",
            "day": date(2024, 3, 2),
        },
    ]
    table = pa.Table.from_arrays(columns.arrays(values), schema=pa.schema(columns.arrow_fields))
    assert table.to_pylist() == [
        {
            "kind": "a",
            "again": None,
            "either": "5",
            "where_x": 1,
            "where_y": 0.5,
            "spots": [{"x": 2, "y": 1.5}],
            "scores": [("p", 0.25)],
            "raw": b"\x00\xff",
            "day": date(2024, 3, 1),
        },
        {
            "kind": "b",
            "again": "a",
            "either": '"five"',
            "where_x": None,
            "where_y": None,
            "spots": [],
            "scores": [],
            "raw": b"",
            "day": date(2024, 3, 2),
        },
    ]
    clashing = {**schema, "fields": [*schema["fields"], {"name": "where_x", "type": "int"}]}
    with pytest.raises(UnsupportedSchemaError, match="flattened column names clash: where_x"):
        RecordColumns(clashing)
