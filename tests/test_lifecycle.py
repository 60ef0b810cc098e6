"""The lifecycle's Faust-free parts: correction checks, control-topic folding, artifact checks, triggers."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from models.classifier import Classifier
from models.registry.model_registry import CHALLENGER, CHAMPION, ChecksumError, ModelRegistry
from models.retraining.corrections_log import CorrectionsLog
from models.retraining.warm_start import NoNewCorrectionsError
from schemas import AvroSerde, LocalCatalogue, now_ms
from streams.lifecycle import model_events
from streams.lifecycle.coordinator import SKIPPED, Coordinator
from streams.lifecycle.corrections import CorrectionProcessor, correction_value
from streams.lifecycle.model_events import ModelState
from streams.lifecycle.model_follower import load_verified
from streams.pipeline.codes import load_code_lists
from streams.pipeline.messages import RawMessage
from streams.pipeline.validation import Validator
from streams.settings import Settings
from streams.topics import CORRECTIONS, REJECTED, TOPICS

CATALOGUE = LocalCatalogue()
SERDE = AvroSerde(CATALOGUE, TOPICS[CORRECTIONS].subject, TOPICS[CORRECTIONS].schema)
REJECTED_SERDE = AvroSerde(CATALOGUE, TOPICS[REJECTED].subject, TOPICS[REJECTED].schema)


@pytest.fixture(scope="module")
def processor() -> CorrectionProcessor:
    settings = Settings()
    return CorrectionProcessor(settings, CATALOGUE, Validator(load_code_lists(), 1000, 4000))


def message(value: dict[str, Any] | bytes, offset: int, partition: int = 0) -> RawMessage:
    raw = value if isinstance(value, bytes) else SERDE.encode(correction_value(value))
    key = None if isinstance(value, bytes) else str(value["id"]).encode()
    return RawMessage(CORRECTIONS, partition, offset, 1_700_000_000_000, key, raw)


def rejected_codes(batch: Any) -> list[tuple[str, list[str]]]:
    out = []
    for record in batch.outputs:
        value = REJECTED_SERDE.decode(record.value)
        out.append((value["stage"], [e["code"] for e in value["errors"]]))
    return out


def test_correction_value_reads_loose_rows() -> None:
    value = correction_value(
        {
            "id": 7,
            "name": " Вывоз мусора ",
            "label": "service",
            "unit": "усл",
            "corrected_at": "2026-11-30T10:00:00Z",
        }
    )
    assert value["id"] == "7" and value["name"] == "Вывоз мусора" and value["full_name"] == "Вывоз мусора"
    assert value["corrected_fields"]["unit"] == "усл" and value["corrected_fields"]["country"] is None
    assert value["corrected_at"].isoformat() == "2026-11-30T10:00:00+00:00"
    assert correction_value({"id": "x", "name": "a", "label": "product"})["corrected_fields"] is None


def test_a_valid_correction_is_logged_and_kept_as_the_latest(processor: CorrectionProcessor) -> None:
    batch = processor.process(
        [
            message({"id": "a", "name": "Вывоз мусора", "label": "service", "corrected_at": 2_000}, 10),
            message({"id": "a", "name": "Вывоз мусора", "label": "product", "corrected_at": 1_000}, 11),
            message({"id": "b", "name": "Болт М8", "label": "product", "country": "RU"}, 12),
        ],
        lambda partition, key: None,
    )
    assert batch.accepted == 3 and not batch.outputs
    assert [row["offset"] for row in batch.log_rows[0]] == [10, 11, 12]  # every accepted one is logged
    assert batch.latest == [(0, "a", "service"), (0, "b", "product")]  # the older "product" did not win
    kept = {update.key: update.value for update in batch.table_updates}
    assert b'"label": "service"' in kept["a"] and set(kept) == {"a", "b"}
    assert (
        batch.log_rows[0][2]["country"] == "RU" and batch.log_rows[0][2]["corrected_at"] == 1_700_000_000_000
    )


def test_a_stored_newer_correction_wins_over_a_late_older_one(processor: CorrectionProcessor) -> None:
    stored = {"label": "service", "corrected_at": 5_000, "offset": 3}
    batch = processor.process(
        [message({"id": "a", "name": "Вывоз мусора", "label": "product", "corrected_at": 4_000}, 9)],
        lambda partition, key: stored if key == "a" else None,
    )
    assert batch.accepted == 1 and batch.latest == [] and batch.table_updates == []


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ({"id": "a", "name": "Вывоз мусора"}, "required"),
        ({"id": "a", "name": "Вывоз мусора", "label": "goods"}, "label_invalid"),
        ({"id": "a", "name": "Вывоз\x01мусора", "label": "service"}, "control_chars"),
        ({"id": "a", "name": "Вывоз", "label": "service", "okved_code": "99.99"}, "okved_unknown"),
        ({"id": "a", "name": "Вывоз", "label": "service", "country": "XX"}, "country_unknown"),
        ({"id": "a", "name": "Вывоз", "label": "service", "comment": "x" * 2001}, "too_long"),
        (
            {"id": "a", "name": "Вывоз", "label": "service", "corrected_at": now_ms() + 3 * 86_400_000},
            "corrected_at_future",
        ),
    ],
)
def test_a_bad_correction_is_dead_lettered_with_its_reason(
    processor: CorrectionProcessor, value: dict[str, Any], code: str
) -> None:
    batch = processor.process([message(value, 5)], lambda partition, key: None)
    assert batch.accepted == 0 and not batch.log_rows and not batch.table_updates
    [(stage, codes)] = rejected_codes(batch)
    assert stage == "correction" and code in codes
    assert batch.rejected[code] == codes.count(code)


def test_undecodable_bytes_are_dead_lettered_as_corrections(processor: CorrectionProcessor) -> None:
    batch = processor.process([message(b"\x00\x00\x00\x00\x63garbage", 1)], lambda partition, key: None)
    [(stage, codes)] = rejected_codes(batch)
    assert stage == "correction" and codes == ["unknown_schema_id"]


def event(registry: str, kind: str, version: str | None) -> dict[str, Any]:
    alias = "challenger" if kind in ("registered", "challenger_removed") else "champion"
    return {"registry_id": registry, "event": kind, "alias": alias, "version": version}


def test_the_control_topic_folds_into_champion_and_challenger() -> None:
    state = ModelState("r1")
    events = [
        event("r1", "announced", "a"),
        event("r2", "promoted", "x"),  # another registry's: ignored
        event("r1", "registered", "b"),
        event("r1", "promoted", "b"),  # the promoted challenger stops being one
        event("r1", "registered", "c"),
        event("r1", "challenger_removed", None),
        event("r1", "rolled_back", "a"),
    ]
    applied = [state.apply(e, offset) for offset, e in enumerate(events)]
    assert applied == [True, False, True, True, True, True, True]
    assert state.champion is not None and state.champion["version"] == "a" and state.challenger is None
    assert [e["version"] for e in state.champions] == ["a", "b", "a"]
    assert state.next_offset == len(events) and state.events == 6


def test_an_announced_artifact_is_checked_against_event_and_registry(models_dir: Path) -> None:
    registry = ModelRegistry(models_dir)
    version = registry.get("champion").version
    announced = model_events.new_event(registry, model_events.PROMOTED, version, by="test")
    assert announced["sha256"] == registry.get(version).artifact_sha256
    assert load_verified(registry, announced).version == version
    with pytest.raises(ChecksumError, match="announced sha256"):
        load_verified(registry, {**announced, "sha256": "0" * 64})
    artifact = models_dir / registry.get(version).artifact
    artifact.write_bytes(artifact.read_bytes() + b"x")
    with pytest.raises(ChecksumError, match="sha256"):
        load_verified(registry, announced)


class Recorder:
    """A training stand-in that records what the coordinator asked for (the decisions are under test)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, snapshot: str, reason: str, cycle: str) -> dict[str, Any]:
        self.calls.append((snapshot, reason, cycle))
        raise NoNewCorrectionsError("recorded")


def corrections_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"i{k}",
            "name": "Вывоз мусора",
            "full_name": "Вывоз мусора",
            "label": "service",
            "corrected_at": 1_000 + k,
            "topic": CORRECTIONS,
            "partition": 0,
            "offset": k,
        }
        for k in range(start, start + n)
    ]


def run(coordinator: Coordinator) -> None:
    async def tick() -> None:
        await coordinator.tick()
        if coordinator.task is not None:
            await coordinator.task

    asyncio.run(tick())


def coordinator_for(tmp_path: Path, **settings: Any) -> tuple[Coordinator, Recorder, CorrectionsLog]:
    config = dataclasses.replace(Settings(), models_path=tmp_path / "models", **settings)
    recorder = Recorder()

    async def announce(events: list[dict[str, Any]]) -> None:
        raise AssertionError(f"nothing is registered here: {events}")

    coordinator = Coordinator(config, ModelRegistry(config.models_dir), recorder, announce)
    return coordinator, recorder, CorrectionsLog(config.corrections_dir)


def test_corrections_start_a_cycle_at_the_threshold(tmp_path: Path) -> None:
    coordinator, recorder, log = coordinator_for(
        tmp_path, retrain_min_corrections=5, retrain_interval_seconds=0
    )
    log.append(0, corrections_rows(4))
    run(coordinator)
    assert recorder.calls == [] and coordinator.new_corrections == 4
    log.append(0, corrections_rows(1, start=4))
    run(coordinator)
    assert len(recorder.calls) == 1 and "5 new corrections" in recorder.calls[0][1]
    [cycle] = coordinator.state["cycles"]
    assert cycle["trigger"] == "corrections" and cycle["status"] == SKIPPED
    run(coordinator)  # the snapshot moved the trained offsets: nothing new
    assert len(recorder.calls) == 1 and coordinator.new_corrections == 0


def test_requests_and_drift_alerts_start_cycles(tmp_path: Path) -> None:
    coordinator, recorder, log = coordinator_for(
        tmp_path, retrain_min_corrections=0, retrain_interval_seconds=0
    )
    coordinator.ingest(
        {"kind": "retrain_request", "at": now_ms() + 1, "trigger": "drift", "reason": "unit drifted"}
    )
    run(coordinator)
    assert recorder.calls == []  # a drift alert with nothing new to learn from
    log.append(0, corrections_rows(1))
    run(coordinator)
    assert len(recorder.calls) == 1 and recorder.calls[0][1].startswith("unit drifted")
    coordinator.ingest(
        {
            "kind": "retrain_request",
            "at": now_ms(),
            "trigger": "manual",
            "reason": "why not",
            "requested_by": "ann",
        }
    )
    run(coordinator)
    assert len(recorder.calls) == 2 and recorder.calls[1][1] == "requested by ann: why not"
    assert [c["trigger"] for c in coordinator.state["cycles"]] == ["drift", "manual"]


def test_automatic_triggers_wait_while_a_challenger_is_in_shadow(tmp_path: Path) -> None:
    coordinator, recorder, log = coordinator_for(
        tmp_path, retrain_min_corrections=2, retrain_interval_seconds=0
    )
    coordinator.state["cycles"].append(
        {"status": "shadow", "version": "v", "registered_at": now_ms(), "gate": {}}
    )
    coordinator._follow_challengers = _nothing  # type: ignore[method-assign]  # no registry to follow here
    log.append(0, corrections_rows(3))
    run(coordinator)
    assert recorder.calls == []
    coordinator.state["cycles"][0]["registered_at"] = (
        now_ms() - (coordinator.settings.shadow_max_seconds + 1) * 1000
    )
    run(coordinator)
    assert len(recorder.calls) == 1


async def _nothing() -> None:
    return None


def test_a_challenger_registered_with_its_gate_is_adopted_and_promoted_on_its_shadow_verdict(
    models_dir: Path, tmp_path: Path
) -> None:
    """`nomenclature tune --register-best` registers a gated challenger outside any cycle: the coordinator
    takes it through the same shadow comparison and promotion; a challenger without gate figures is left to
    the operator."""
    config = dataclasses.replace(
        Settings(), models_path=models_dir, data_dir=tmp_path, shadow_min_items=10, auto_promote=True
    )
    registry = ModelRegistry(config.models_dir)
    champion = registry.get(CHAMPION).version
    classifier = registry.load(champion)
    events: list[dict[str, Any]] = []

    async def announce(sent: list[dict[str, Any]]) -> None:
        events.extend(sent)

    coordinator = Coordinator(config, registry, Recorder(), announce)

    def copy(version: str) -> Classifier:
        return Classifier(
            classifier.model, classifier.featurizer, version, temperature=classifier.temperature
        )

    plain = registry.register(copy("plain-1"), {}, models_dir, data_sha256="x", data_rows={})
    registry.set_alias(CHALLENGER, plain.version)
    run(coordinator)
    assert coordinator.state["cycles"] == []  # no gate figures: not the coordinator's to promote
    gate = {"eligible": True, "reasons": ["macro-F1 on the reference holdout 0.99 → 0.99"]}
    record = registry.register(
        copy("tuned-1"),
        {"gate": gate},
        models_dir,
        notes="tuned: study s trial 3",
        data_sha256="x",
        data_rows={},
    )
    registry.set_alias(CHALLENGER, record.version)
    run(coordinator)
    [cycle] = coordinator.state["cycles"]
    assert cycle["trigger"] == "registered" and cycle["status"] == "shadow" and cycle["version"] == "tuned-1"
    assert cycle["reason"] == "tuned: study s trial 3" and cycle["champion"] == champion
    assert cycle["decision"].startswith("in shadow")
    report = {"challenger": "tuned-1", "champion": champion, "partition": 0, "scored": 40, "agreed": 30,
              "both_right": 20, "champion_only": 0, "challenger_only": 10, "both_wrong": 0}  # fmt: skip
    coordinator.ingest({"kind": "shadow_report", "at": now_ms(), "shadow": report})
    run(coordinator)
    assert cycle["status"] == "promoted" and registry.get(CHAMPION).version == "tuned-1"
    assert [(e["event"], e["version"]) for e in events] == [("promoted", "tuned-1")]
    run(coordinator)  # promoted: nothing more to adopt
    assert len(coordinator.state["cycles"]) == 1
