"""End to end on a real broker: raw Avro in, worker process, classified / rejected out."""

from __future__ import annotations

import csv
import os
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from models.features.text_normalization import normalize_text
from streams.topics import RAW
from tests.support import (
    Broker,
    item_serde,
    make_item,
    new_worker,
    produce,
    produce_items,
    read_outputs,
    wait_for_ids,
)
from tools.common import BUNDLED_DATA


def labelled_rows(limit: int, offset: int = 0) -> list[dict[str, str]]:
    with BUNDLED_DATA.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // limit)
    return rows[offset::step][:limit]


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_end_to_end_every_id_accounted_for(broker: Broker, tmp_path: Path, models_dir: Path) -> None:
    p = prefix()
    rows = labelled_rows(1000)
    good = [
        make_item(
            f"{p}-{i}",
            row["name"],
            unit="шт" if row["label"] == "product" else None,
            country="RU",
            okved_code="62.01" if i % 7 == 0 else None,
            hs_code="8471" if i % 11 == 0 else None,
            label=row["label"],
        )
        for i, row in enumerate(rows)
    ]
    bad = (
        [make_item(f"{p}-bad-okved-{i}", "Болт М8", okved_code="99.99") for i in range(10)]
        + [make_item(f"{p}-bad-hs-{i}", "Гайка М8", hs_code="7701") for i in range(10)]
        + [make_item(f"{p}-bad-country-{i}", "Шайба", country="XX") for i in range(10)]
        + [make_item(f"{p}-bad-blank-{i}", "   ") for i in range(10)]
        + [make_item(f"{p}-bad-label-{i}", "Винт", label="goods") for i in range(10)]
    )
    produce_items(broker.bootstrap, good + bad)

    worker = new_worker(broker, tmp_path, models_dir).start()
    try:
        worker.wait_ready()
        classified, rejected = wait_for_ids(broker.bootstrap, p, {i["id"] for i in good + bad}, worker)
        health = worker.get("/health")
        stats = worker.get("/stats")
    finally:
        worker.stop()

    by_id = {c["id"]: c for c in classified}
    assert set(by_id) == {i["id"] for i in good}, "exactly the valid items are classified"
    rejected_codes = {r["item_id"]: {e["code"] for e in r["errors"]} for r in rejected}
    assert set(rejected_codes) == {i["id"] for i in bad}
    for item_id, codes in rejected_codes.items():
        expected = {
            "okved": "okved_unknown",
            "hs": "hs_unknown_chapter",
            "country": "country_unknown",
            "blank": "blank",
            "label": "label_invalid",
        }[item_id.split("-")[2]]
        assert expected in codes, (item_id, codes)
    assert all(r["stage"] == "validate" and r["source"]["topic"] == RAW for r in rejected)

    champion = health["model"]["version"]
    correct = 0
    for item in good:
        out = by_id[item["id"]]
        assert out["label"] in {"product", "service"}
        assert 0.5 <= out["confidence"] <= 1.0
        assert abs(sum(out["probabilities"].values()) - 1.0) < 1e-6
        assert out["top_k"][0]["label"] == out["label"]
        assert [t["probability"] for t in out["top_k"]] == sorted(
            (t["probability"] for t in out["top_k"]), reverse=True
        )
        assert out["model_version"] == champion and out["featurizer_version"]
        assert out["source"]["topic"] == RAW and out["source"]["offset"] >= 0
        assert out["item"]["name"] == item["name"].strip()
        words = set(normalize_text(item["name"]).split())
        assert all(e["token"] in words and e["weight"] > 0 for e in out["explanation"]), out["explanation"]
        correct += out["label"] == item["label"]
    assert correct / len(good) > 0.95

    assert health["status"] == "ok" and health["broker"]["reachable"] and health["assignment"]
    raw_stats = stats["topics"][RAW]
    assert raw_stats["in"] >= len(good) + len(bad)
    assert raw_stats["classified"] >= len(good)
    assert raw_stats["rejected_by_code"]["okved_unknown"] >= 10
    assert stats["tables"]["items"]["keys"] >= len(good)
    assert stats["lag"] and all(v["lag"] == 0 for v in stats["lag"].values()), stats["lag"]


def _avro_body(item: dict[str, Any]) -> bytes:
    return item_serde().encode(item)[5:]


def test_malformed_records_are_dead_lettered_and_the_worker_keeps_going(
    broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    p = prefix()
    serde = item_serde()
    header = struct.pack(">bI", 0, serde.schema_id)
    valid = serde.encode(make_item(f"{p}-x", "Насос центробежный"))
    utf8 = serde.encode(make_item(f"{p}-utf8", "AAAA")).replace(b"AAAA", b"\xff\xfe\xfd\xfc")
    cases: dict[str, tuple[bytes | None, str, str]] = {
        "random": (b"\x07" + os.urandom(64), "decode", "bad_magic_byte"),
        "magic": (b"\x01" + valid[1:], "decode", "bad_magic_byte"),
        "truncated": (valid[:-6], "decode", "truncated_avro"),
        "header": (b"\x00\x00", "decode", "truncated_header"),
        "unknown-id": (struct.pack(">bI", 0, 987654) + valid[5:], "decode", "unknown_schema_id"),
        "utf8": (utf8, "decode", "invalid_utf8"),
        "empty": (None, "decode", "empty_payload"),
        "huge-name": (  # 2^17 two-byte letters: over the 256 KiB dead-letter copy, under 1 MiB
            header + _avro_body(make_item(f"{p}-huge-name", "Я" * (1 << 17))),
            "validate",
            "too_long",
        ),
        "null-name": (
            header + _avro_body({"id": f"{p}-null-name", "name": None, "full_name": "Полное"}),
            "validate",
            "required",
        ),
        "null-full": (
            header + _avro_body({"id": f"{p}-null-full", "name": "Кран", "full_name": None}),
            "validate",
            "required",
        ),
    }
    records = [(f"{p}-{case}".encode(), value) for case, (value, _, _) in cases.items()]
    good = [
        make_item(f"{p}-good-{i}", name) for i, name in enumerate(["Ремонт насоса", "Насос", "Монтаж"] * 7)
    ]
    produce(broker.bootstrap, records)
    produce_items(broker.bootstrap, good)

    worker = new_worker(broker, tmp_path, models_dir).start()
    try:
        worker.wait_ready()
        expected = {f"{p}-{case}" for case in cases} | {g["id"] for g in good}
        classified, rejected = wait_for_ids(broker.bootstrap, p, expected, worker)
        assert worker.get("/health")["status"] == "ok"
    finally:
        worker.stop()

    assert {c["id"] for c in classified} == {g["id"] for g in good}
    dead = {r["item_id"]: r for r in rejected}
    for case, (value, stage, code) in cases.items():
        record = dead[f"{p}-{case}"]
        assert record["stage"] == stage, (case, record["stage"])
        assert code in {e["code"] for e in record["errors"]}, (case, record["errors"])
        assert record["key"] == f"{p}-{case}".encode()
        if value is not None and len(value) <= 262144:
            assert record["value"] == value, case
    huge = dead[f"{p}-huge-name"]
    assert len(huge["value"]) == 262144 and "value_truncated" in {e["code"] for e in huge["errors"]}


def test_duplicates_and_source_topics(broker: Broker, tmp_path: Path, models_dir: Path) -> None:
    p = prefix()
    source_topic = f"{RAW}.erp{p}"
    item = make_item(f"{p}-dup", "Ремонт кровли", unit="усл. ед.")
    changed = dict(item, unit="м2")
    produce_items(broker.bootstrap, [item, item, changed])
    produce_items(broker.bootstrap, [make_item(f"{p}-erp", "Поставка серверного оборудования")], source_topic)

    worker = new_worker(broker, tmp_path, models_dir).start()
    try:
        worker.wait_ready()
        classified, rejected = wait_for_ids(broker.bootstrap, p, {item["id"], f"{p}-erp"}, worker)
        deadline = time.monotonic() + 30
        while len([c for c in classified if c["id"] == item["id"]]) < 2 and time.monotonic() < deadline:
            classified, rejected = wait_for_ids(broker.bootstrap, p, {item["id"]}, worker)
    finally:
        worker.stop()

    dup = [c for c in classified if c["id"] == item["id"]]
    assert [c["item"]["unit"] for c in dup] == ["усл. ед.", "м2"], "changed content is classified again"
    assert len(rejected) == 1 and rejected[0]["errors"][0]["code"] == "duplicate"
    assert rejected[0]["source"]["offset"] == dup[0]["source"]["offset"] + 1
    erp = [c for c in classified if c["id"] == f"{p}-erp"]
    assert erp and erp[0]["source"]["topic"] == source_topic


def test_two_workers_side_by_side_share_the_partitions(
    broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    p = prefix()
    items = [make_item(f"{p}-{i}", row["name"]) for i, row in enumerate(labelled_rows(400))]
    first = new_worker(broker, tmp_path, models_dir)
    second = new_worker(broker, tmp_path, models_dir, app_id=first.app_id)
    assert first.data_dir != second.data_dir and first.web_port != second.web_port
    first.start()
    second.start()
    try:
        first.wait_ready()
        second.wait_ready()
        deadline = time.monotonic() + 60
        while True:  # the group settles on both members holding raw partitions
            owned = [
                {a for a in w.get("/health")["assignment"] if a.startswith(f"{RAW}:")}
                for w in (first, second)
            ]
            if all(owned) and not owned[0] & owned[1]:
                break
            assert time.monotonic() < deadline, owned
            time.sleep(1)
        produce_items(broker.bootstrap, items)
        classified, rejected = wait_for_ids(broker.bootstrap, p, {i["id"] for i in items}, first)
        counts = [w.get("/stats")["topics"].get(RAW, {}).get("classified", 0) for w in (first, second)]
    finally:
        first.stop()
        second.stop()
    assert {c["id"] for c in classified} == {i["id"] for i in items} and not rejected
    assert all(n > 0 for n in counts), counts


@pytest.mark.timeout(900)
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (init here) has yet to reap it


def test_kill_9_mid_stream_then_restart_loses_nothing(
    fresh_broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    # a broker of its own: every later worker of a new group on the shared one would read these items
    broker = fresh_broker
    p = prefix()
    rows = labelled_rows(2000)
    items = [make_item(f"{p}-{i}", rows[i % len(rows)]["name"] + f" {i}") for i in range(8000)]
    produce_items(broker.bootstrap, items)

    worker = new_worker(broker, tmp_path, models_dir)
    # the restarted worker joins once the killed one's session has expired (Faust's 60 s on Kafka)
    worker.extra_env["NOMENCLATURE_SESSION_TIMEOUT_SECONDS"] = "6"
    worker.start().wait_ready()
    deadline = time.monotonic() + 120
    # the worker counts what it has delivered, and on a broker of its own these items are all it reads
    while worker.get("/stats")["topics"].get(RAW, {}).get("classified", 0) < 1000:
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)
    scoring_processes = worker.children()
    assert scoring_processes, "the worker scores in a separate process by default"
    worker.kill9()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in scoring_processes):
        assert time.monotonic() < deadline, "scoring processes outlived the killed worker"
        time.sleep(0.2)
    done_before = len({c["id"] for c in read_outputs(broker.bootstrap, p)[0]})
    assert 0 < done_before < len(items), "the kill must land mid-stream"

    worker.start()
    try:
        worker.wait_ready()
        classified, rejected = wait_for_ids(
            broker.bootstrap, p, {i["id"] for i in items}, worker, timeout=300
        )
    finally:
        worker.stop()

    assert not rejected, rejected[:3]
    ids = [c["id"] for c in classified]
    assert set(ids) == {i["id"] for i in items}, "zero ids missing"
    # re-delivered items come out again under the same key with the same content
    first: dict[str, dict[str, Any]] = {}
    for record in classified:
        stable = {k: v for k, v in record.items() if k != "classified_at"}
        if record["id"] in first:
            assert stable == first[record["id"]]
        else:
            first[record["id"]] = stable


def test_a_raw_topic_created_after_start_is_reported_then_consumed_after_restart(
    broker: Broker, tmp_path: Path, models_dir: Path
) -> None:
    p = prefix()
    late_topic = f"{RAW}.late{p}"
    worker = new_worker(broker, tmp_path, models_dir)
    worker.extra_env["NOMENCLATURE_TOPIC_DISCOVERY_SECONDS"] = "1"
    worker.start()
    try:
        worker.wait_ready()
        produce_items(broker.bootstrap, [make_item(f"{p}-late", "Монтаж кондиционера")], late_topic)
        deadline = time.monotonic() + 30
        while late_topic not in (health := worker.get("/health")).get("unsubscribed_raw_topics", []):
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        assert health["status"] == "degraded"
        worker.stop()
        worker.start()
        worker.wait_ready()
        classified, _ = wait_for_ids(broker.bootstrap, p, {f"{p}-late"}, worker)
        assert worker.get("/health")["unsubscribed_raw_topics"] == []
    finally:
        worker.stop()
    assert classified[0]["source"]["topic"] == late_topic
