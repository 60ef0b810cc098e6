"""Retraining from corrections (models/retraining/warm_start.py) and the promotion rules
(models/retraining/promotion.py).

Real data and models: the session champion (trained on the bundled CSV), the bundled dataset as the
reference (conftest's `reference_dataset`, built once per session in ≈3 s), `retrain` run in a "spawn"
process pool as the coordinator runs it. About 55 s with the session champion's training.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.datasets.builder import VALIDATION, load_manifest
from models.registry.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from models.retraining.corrections_log import CorrectionsLog, CorrectionsSnapshot, ReferenceSet
from models.retraining.promotion import evaluate_gate, mcnemar_exact, shadow_verdict
from models.retraining.warm_start import (
    NoNewCorrectionsError,
    RetrainConfig,
    balanced_sample,
    combined_sha256,
    cycle_corrections,
    held_back_mask,
    id_position,
    replication_factor,
    retrain,
    validation_halves,
)
from models.training.feature_store import dataset_column, materialise
from tests.lifecycle_data import adversarial_corrections, wrong_slice

BASE_MS = 1_760_000_000_000


@pytest.fixture(scope="module")
def feature_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """One spawned worker process, reused by every cycle of the module (as the coordinator's pool)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def log_corrections(root: Path, items: list[dict[str, Any]], at: int = 0) -> CorrectionsSnapshot:
    """Append `items` as corrections over four partitions and snapshot the log."""
    log = CorrectionsLog(root)
    high = log.high_offsets()
    rows = [
        {**item, "user": "tester", "corrected_at": BASE_MS + at + n, "topic": "nomenclature.corrections"}
        for n, item in enumerate(items)
    ]
    for partition in range(4):
        offset = high.get(partition, -1) + 1
        part = [
            {**row, "partition": partition, "offset": offset + k} for k, row in enumerate(rows[partition::4])
        ]
        log.append(partition, part)
    return log.snapshot()


def config_for(models_dir: Path, corrections: Path, dataset: Path, features: Path) -> RetrainConfig:
    return RetrainConfig(
        models_dir=models_dir, corrections_root=corrections, reference_dataset=dataset, feature_root=features
    )


@dataclass
class FirstCycle:
    config: RetrainConfig
    items: list[dict[str, Any]]
    snapshot: CorrectionsSnapshot
    summary: dict[str, Any]
    champion_version: str


@pytest.fixture(scope="module")
def first_cycle(
    trained_models: Path,
    tmp_path_factory: pytest.TempPathFactory,
    reference_dataset: Path,
    feature_root: Path,
    pool: ProcessPoolExecutor,
) -> FirstCycle:
    """80 corrections of removal services the champion calls products, retrained once."""
    root = tmp_path_factory.mktemp("first-cycle")
    shutil.copytree(trained_models, root / "models")
    registry = ModelRegistry(root / "models")
    items = wrong_slice(registry.load(), 80, seed=3, prefix="removal")
    snapshot = log_corrections(root / "corrections", items)
    config = config_for(root / "models", root / "corrections", reference_dataset, feature_root)
    summary = pool.submit(retrain, config, snapshot.path, "test: 80 corrections", "cycle-1").result()
    return FirstCycle(config, items, snapshot, summary, registry.get(CHAMPION).version)


def accuracy(classifier: Any, items: list[dict[str, Any]]) -> float:
    predictions = classifier.predict(items, top_k=1, explain=0)
    return float(np.mean([p.label == item["label"] for p, item in zip(predictions, items, strict=True)]))


# ---- a cycle that should pass the gate ------------------------------------------------------------


def test_corrections_of_a_misread_family_make_an_eligible_challenger(first_cycle: FirstCycle) -> None:
    summary, gate = first_cycle.summary, first_cycle.summary["gate"]
    assert json.loads(json.dumps(summary)) == summary  # JSON-ready
    assert gate["eligible"], gate["reasons"]
    assert gate["corrections"]["challenger_accuracy"] > gate["corrections"]["champion_accuracy"]
    assert gate["reference"]["change_points"] >= -0.5

    # the gate's numbers, recomputed from the held-back items with both registered models
    registry = ModelRegistry(first_cycle.config.models_dir)
    mask = held_back_mask([item["id"] for item in first_cycle.items], 0.2)
    heldback = [item for item, held in zip(first_cycle.items, mask, strict=True) if held]
    assert gate["corrections"]["rows"] == len(heldback) == summary["corrections"]["heldback"] > 0
    champion, challenger = registry.load(CHAMPION), registry.load(summary["version"])
    assert gate["corrections"]["champion_accuracy"] == accuracy(champion, heldback) == 0.0
    assert gate["corrections"]["challenger_accuracy"] == accuracy(challenger, heldback)

    # it learnt the family, not just the rows: other removal services the champion gets wrong
    trained_names = {item["name"] for item in first_cycle.items}
    others = [i for i in wrong_slice(champion, 300, seed=9, prefix="other") if i["name"] not in trained_names]
    assert len(others) >= 150
    assert accuracy(challenger, others) >= 0.9


def test_the_challenger_is_registered_with_its_gate_and_baseline_but_no_alias(
    first_cycle: FirstCycle,
) -> None:
    summary = first_cycle.summary
    registry = ModelRegistry(first_cycle.config.models_dir)
    record = registry.verify(summary["version"])  # the artifact matches its sha256
    assert registry.load(summary["version"]).version == summary["version"]
    assert registry.aliases() == {CHAMPION: first_cycle.champion_version}
    assert summary["champion"] == first_cycle.champion_version and CHALLENGER not in registry.aliases()
    assert (summary["artifact"], summary["sha256"]) == (record.artifact, record.artifact_sha256)
    assert summary["training_seconds"] == record.training_seconds < 60
    assert (
        record.notes
        == f"retrained from {first_cycle.champion_version} on 80 corrections (test: 80 corrections)"
    )

    metrics = record.metrics
    assert metrics["gate"] == summary["gate"]
    baseline = registry.load_baseline(summary["version"])
    assert baseline is not None and baseline.model_version == summary["version"]
    assert record.baseline["file"] == f"{summary['version']}/baseline.json"
    assert "вывоз" in baseline.vocabulary  # the corrections' words are training vocabulary now
    assert metrics["global_importance"] and metrics["slices"] and metrics["per_class"]
    assert len(metrics["history"]) == summary["epochs_run"] == metrics["epochs_run"]
    scores = [epoch["score"] for epoch in metrics["history"]]
    assert scores[summary["best_epoch"] - 1] == max(scores)

    retraining = metrics["retraining"]
    dataset_manifest = load_manifest(first_cycle.config.reference_dataset)
    assert retraining["corrections"] == summary["corrections"]
    assert retraining["corrections"]["sha256"] == first_cycle.snapshot.sha256
    assert (retraining["champion"], retraining["cycle"]) == (first_cycle.champion_version, "cycle-1")
    corrections = summary["corrections"]
    assert corrections["new"] == 80 == corrections["train"] + corrections["heldback"]
    assert corrections["labels"] == {"service": 80}
    assert retraining["reference"]["dataset"] == dataset_manifest["version"]
    assert retraining["reference"]["replicated"] is False
    assert retraining["correction_replication"] == replication_factor(corrections["train"], 20_000) == 10
    assert retraining["correction_rows"] == 10 * corrections["train"]
    assert summary["train_rows"] == record.data_rows["total"] == retraining["train_rows"]
    assert summary["train_rows"] == summary["reference_rows"] + retraining["correction_rows"]
    assert summary["reference_rows"] == 20_000 >= 0.1 * summary["train_rows"]
    expected_sha = combined_sha256(first_cycle.snapshot.sha256, dataset_manifest["content_sha256"])
    assert record.data_sha256 == expected_sha


# ---- a cycle that should not -------------------------------------------------------------------


def test_corrections_against_the_reference_fail_the_gate_on_the_reference(
    models_dir: Path, tmp_path: Path, reference_dataset: Path, feature_root: Path, pool: ProcessPoolExecutor
) -> None:
    snapshot = log_corrections(tmp_path / "corrections", adversarial_corrections(4000, seed=2))
    config = config_for(models_dir, tmp_path / "corrections", reference_dataset, feature_root)
    summary = pool.submit(retrain, config, snapshot.path, "test: adversarial", "cycle-adv").result()
    gate = summary["gate"]
    assert not gate["eligible"]
    assert gate["reference"]["change_points"] < -0.5
    assert gate["reference"]["challenger_macro_f1"] < gate["reference"]["champion_macro_f1"] - 0.005
    # it did learn its corrections: the reference alone is what keeps it out
    assert gate["corrections"]["challenger_accuracy"] > gate["corrections"]["champion_accuracy"]
    assert len(gate["reasons"]) == 1
    assert (
        "reference holdout" in gate["reasons"][0]
        and "loses more than the allowed 0.5 points" in gate["reasons"][0]
    )
    registry = ModelRegistry(models_dir)
    assert summary["version"] in {r.version for r in registry.list()}
    assert summary["version"] not in registry.aliases().values()


# ---- nothing new ----------------------------------------------------------------------------------


def test_after_the_cycle_joined_the_reference_nothing_is_new(
    first_cycle: FirstCycle, tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    root = tmp_path / "corrections"
    shutil.copytree(first_cycle.config.corrections_root, root)
    config = replace(first_cycle.config, corrections_root=root)
    snapshot_path = root / "snapshots" / first_cycle.snapshot.path.name
    assert ReferenceSet(root).join(snapshot_path, "cycle-1") == 80
    versions = len(ModelRegistry(config.models_dir).list())
    with pytest.raises(NoNewCorrectionsError):
        pool.submit(retrain, config, snapshot_path, "test: again", "cycle-2").result()
    assert len(ModelRegistry(config.models_dir).list()) == versions

    # one item corrected again (a newer label) is the next cycle's only new correction, and the accepted
    # row of that id leaves the reference pool
    again = {**first_cycle.items[0], "label": "product"}
    later = log_corrections(root, [again], at=10_000)
    corrections = cycle_corrections(later.path, root, holdback=0.2)
    assert corrections.new["id"].tolist() == [again["id"]] and corrections.new["label"].tolist() == [
        "product"
    ]
    assert len(corrections.accepted) == 79 and again["id"] not in set(corrections.accepted["id"])


def test_the_pool_worker_lowered_its_priority_once(
    first_cycle: FirstCycle, pool: ProcessPoolExecutor
) -> None:
    assert pool.submit(os.nice, 0).result() == min(os.nice(0) + 10, 19)


# ---- the pieces -----------------------------------------------------------------------------------


def test_held_back_ids_are_stable_and_the_edge_rules_apply() -> None:
    ids = [f"item-{n}" for n in range(500)]
    mask = held_back_mask(ids, 0.2)
    assert 0.14 < mask.mean() < 0.26
    assert mask.tolist() == [id_position(i) < 0.2 for i in ids]
    assert mask.tolist() == held_back_mask(list(reversed(ids)), 0.2)[::-1].tolist()  # order-free
    subset = ids[100:160]
    assert held_back_mask(subset, 0.2).tolist() == mask[100:160].tolist()  # same id, same side
    expected = int(hashlib.blake2b(b"item-7", digest_size=8).hexdigest(), 16) / 2**64
    assert id_position("item-7") == expected

    positions = {i: id_position(i) for i in ids}
    none_held = [i for i in ids if positions[i] >= 0.2][:5]
    assert held_back_mask(none_held, 0.2).tolist() == [
        i == min(none_held, key=positions.get) for i in none_held
    ]
    all_held = [i for i in ids if positions[i] < 0.2][:5]
    assert held_back_mask(all_held, 0.2).tolist() == [i != max(all_held, key=positions.get) for i in all_held]
    assert held_back_mask(all_held[:1], 0.2).tolist() == [False]  # a lone correction is trained on
    assert held_back_mask(none_held[:1], 0.2).tolist() == [False]


def test_balanced_sample_is_equal_per_label_as_far_as_available() -> None:
    labels = np.asarray(["product"] * 900 + ["service"] * 300, dtype=object)
    rng = np.random.default_rng(0)
    take = balanced_sample(labels, 400, rng)
    assert len(set(take.tolist())) == 400
    assert (labels[take] == "service").sum() == 200
    take = balanced_sample(labels, 1000, rng)  # services run out: the rest are products
    assert (labels[take] == "service").sum() == 300 and (labels[take] == "product").sum() == 700
    take = balanced_sample(labels, 2500, rng)  # beyond the pool: two whole copies and a sample
    assert len(take) == 2500 and np.bincount(take, minlength=1200).min() == 2
    assert balanced_sample(labels, 400, np.random.default_rng(1)).tolist() == (
        balanced_sample(labels, 400, np.random.default_rng(1)).tolist()
    )


def test_replication_rule() -> None:
    # corrections aim at 5 % of the training rows, at least one copy and at most ten of each
    assert replication_factor(64, 20_000) == 10
    assert replication_factor(200, 20_000) == round(0.05 / 0.95 * 20_000 / 200) == 5
    assert replication_factor(1200, 20_000) == 1
    assert replication_factor(50_000, 20_000) == 1


def test_validation_halves_are_disjoint_stable_and_keep_groups_whole(
    reference_dataset: Path, feature_root: Path
) -> None:
    validation = materialise(reference_dataset, feature_root).read(VALIDATION)
    holdout = validation_halves(reference_dataset, validation, seed=42)
    assert 0.3 < holdout.mean() < 0.7
    assert holdout.tolist() == validation_halves(reference_dataset, validation, seed=42).tolist()
    assert holdout.tolist() != validation_halves(reference_dataset, validation, seed=43).tolist()
    groups = np.asarray(dataset_column(reference_dataset, "group", validation.row_ids), dtype=object)
    assert not set(groups[holdout].tolist()) & set(groups[~holdout].tolist())
    assert set(validation.labels[holdout].tolist()) == {"product", "service"}


# ---- promotion rules ------------------------------------------------------------------------------


def test_mcnemar_exact_against_hand_computed_values() -> None:
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)  # 0.03125
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)  # 2·P(X ≤ 1), X ~ Bin(10, ½)
    assert mcnemar_exact(3, 9) == mcnemar_exact(9, 3)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(2, 40) < 1e-8


def test_gate_allows_delta_points_of_reference_loss_and_needs_a_strict_gain() -> None:
    passing = evaluate_gate(
        reference_rows=1000,
        champion_reference_f1=0.75,
        challenger_reference_f1=0.5,
        correction_rows=20,
        champion_correction_accuracy=0.25,
        challenger_correction_accuracy=0.5,
        delta_points=25,
    )
    assert passing.eligible and passing.delta_points == 25
    assert passing.reference == {
        "rows": 1000,
        "champion_macro_f1": 0.75,
        "challenger_macro_f1": 0.5,
        "change_points": -25.0,
    }
    assert passing.corrections["change_points"] == 25.0 and "a gain" in passing.reasons[-1]
    assert passing.as_dict()["eligible"] is True and json.dumps(passing.as_dict())

    kwargs: dict[str, Any] = {
        "reference_rows": 1000,
        "champion_reference_f1": 0.95,
        "challenger_reference_f1": 0.9449,  # 0.51 points lost
        "correction_rows": 20,
        "champion_correction_accuracy": 0.25,
        "challenger_correction_accuracy": 0.9,
    }
    too_much = evaluate_gate(**kwargs)
    assert not too_much.eligible and len(too_much.reasons) == 1
    assert "reference holdout" in too_much.reasons[0]
    assert evaluate_gate(**(kwargs | {"challenger_reference_f1": 0.946})).eligible

    tie = evaluate_gate(
        **(kwargs | {"challenger_reference_f1": 0.96, "challenger_correction_accuracy": 0.25})
    )
    assert not tie.eligible and "no gain" in tie.reasons[0]
    nothing_held = evaluate_gate(**(kwargs | {"challenger_reference_f1": 0.96, "correction_rows": 0}))
    assert not nothing_held.eligible and "held back" in nothing_held.reasons[0]


def test_shadow_verdict_needs_items_direction_and_significance() -> None:
    base = {
        "scored": 500,
        "agreed": 470,
        "both_right": 400,
        "both_wrong": 10,
        "min_items": 200,
        "alpha": 0.05,
    }
    verdict = shadow_verdict(b=4, c=26, **base)
    assert verdict.significant and verdict.p_value == mcnemar_exact(4, 26) < 0.05
    summary = verdict.summary()
    assert summary["agreement_rate"] == 470 / 500 and summary["paired"] == 440
    assert summary["champion_accuracy"] == 404 / 440 and summary["challenger_accuracy"] == 426 / 440
    assert not shadow_verdict(b=26, c=4, **base).significant  # significant, but the champion's way
    assert not shadow_verdict(b=10, c=16, **base).significant  # the right way, not significant
    assert mcnemar_exact(10, 16) > 0.05
    too_few = shadow_verdict(b=4, c=26, **(base | {"scored": 199}))
    assert not too_few.significant and "199" in too_few.reasons[0]
