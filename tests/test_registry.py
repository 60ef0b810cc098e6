"""Model registry: checksums, champion/challenger aliases, rollback, metadata, and `nomenclature models`."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from models.classifier import Classifier
from models.registry.model_registry import (
    ChecksumError,
    ModelRecord,
    ModelRegistry,
    NothingToRollBackError,
    UnknownModelError,
)
from models.training.train import train
from tests.support import labelled_sample_csv
from tools.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelled_sample_csv(tmp_path_factory.mktemp("registry-data"), per_label=300, seed=11)


@pytest.fixture(scope="module")
def trained(small_csv: Path) -> tuple[Classifier, dict[str, Any]]:
    return train(small_csv, seed=5, max_epochs=2, progress=False)


def _renamed(classifier: Classifier, suffix: str) -> Classifier:
    clone = copy.copy(classifier)
    clone.version = classifier.version + suffix
    return clone


@pytest.fixture
def three(
    tmp_path: Path, trained: tuple[Classifier, dict[str, Any]], small_csv: Path
) -> tuple[ModelRegistry, list[str]]:
    """A registry at <tmp_path>/models (= <data_dir>/models) with versions -a (champion), -b, -c."""
    classifier, metrics = trained
    registry = ModelRegistry(tmp_path / "models")
    versions = [
        registry.register(_renamed(classifier, s), metrics, small_csv, notes=f"model {s}").version
        for s in ("-a", "-b", "-c")
    ]
    return registry, versions


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NOMENCLATURE_DATA_DIR for in-process CLI calls; the registry is at <it>/models."""
    monkeypatch.setenv("NOMENCLATURE_DATA_DIR", str(tmp_path))
    return tmp_path


def _tamper(registry: ModelRegistry, version: str) -> None:
    artifact = registry.root / registry.get(version).artifact
    payload = bytearray(artifact.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # same length, one byte flipped
    artifact.write_bytes(bytes(payload))


# ---- checksums -----------------------------------------------------------------------------------


def test_a_tampered_artifact_is_refused(three: tuple[ModelRegistry, list[str]]) -> None:
    registry, (a, b, _) = three
    assert registry.load(a).version == a
    _tamper(registry, a)
    with pytest.raises(ChecksumError, match="differs from the registered"):
        registry.load(a)
    with pytest.raises(ChecksumError):
        registry.load("champion")
    with pytest.raises(ChecksumError):
        registry.verify(a)
    assert registry.verify(b).version == b  # the others are untouched
    (registry.root / registry.get(b).artifact).unlink()
    with pytest.raises(ChecksumError, match="missing"):
        registry.load(b)


def test_the_cli_refuses_a_tampered_model_with_a_message(
    data_dir: Path, three: tuple[ModelRegistry, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    registry, (a, b, _) = three
    _tamper(registry, b)
    with pytest.raises(SystemExit) as exc:
        main(["models", "promote", b])
    assert "checksum mismatch" in str(exc.value.code) and b in str(exc.value.code)
    assert ModelRegistry(data_dir / "models").aliases()["champion"] == a  # not promoted
    main(["models", "show", b])
    assert "artifact check    FAILED" in capsys.readouterr().out


def test_cli_errors_exit_non_zero_without_a_traceback(
    tmp_path: Path, three: tuple[ModelRegistry, list[str]]
) -> None:
    registry, (a, _, _) = three
    _tamper(registry, a)
    env = {**os.environ, "NOMENCLATURE_DATA_DIR": str(tmp_path)}
    names = tmp_path / "names.csv"
    names.write_text("name\nРемонт кровли\n", encoding="utf-8")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tools.cli", *argv]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    tampered = run("predict", "--input", str(names), "--output", str(tmp_path / "out.csv"))
    assert tampered.returncode == 1
    assert "checksum mismatch" in tampered.stderr and "Traceback" not in tampered.stderr
    unknown = run("models", "show", "mlp-does-not-exist")
    assert unknown.returncode == 1
    assert "no model version or alias 'mlp-does-not-exist'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


# ---- aliases and rollback ------------------------------------------------------------------------


def test_promote_and_rollback_walk_the_champion_history(three: tuple[ModelRegistry, list[str]]) -> None:
    registry, (a, b, c) = three
    assert registry.aliases() == {"champion": a}
    registry.promote(b)
    registry.promote(b)  # already champion: nothing changes, nothing to roll back twice
    registry.promote(c)
    assert registry.champion_history() == [a, b, c]
    reopened = ModelRegistry(registry.root)  # everything is persisted
    assert reopened.rollback().version == b
    assert reopened.champion() == registry.get(b)
    assert reopened.load().version == b
    assert reopened.rollback().version == a
    with pytest.raises(NothingToRollBackError, match="first champion"):
        reopened.rollback()
    assert reopened.champion() == registry.get(a)
    actions = [(e["action"], e["version"]) for e in reopened.alias_events()]
    assert actions == [("register", a), ("promote", b), ("promote", c), ("rollback", b), ("rollback", a)]
    assert not list(registry.root.rglob("*.tmp"))


def test_an_empty_registry_has_nothing_to_roll_back(tmp_path: Path) -> None:
    with pytest.raises(NothingToRollBackError, match="no champion"):
        ModelRegistry(tmp_path).rollback()


def test_challenger_alias_goes_away_when_promoted(three: tuple[ModelRegistry, list[str]]) -> None:
    registry, (a, b, c) = three
    registry.set_alias("challenger", b)
    assert registry.get("challenger").version == b
    assert registry.aliases_of(b) == ["challenger"]
    with pytest.raises(ValueError, match="is the champion"):
        registry.set_alias("challenger", a)
    with pytest.raises(ValueError, match="unknown alias"):
        registry.set_alias("production", c)
    with pytest.raises(UnknownModelError):
        registry.set_alias("challenger", "mlp-missing")

    assert registry.promote("challenger").version == b
    assert registry.aliases() == {"champion": b}
    with pytest.raises(UnknownModelError):
        registry.get("challenger")

    registry.set_alias("challenger", c)
    registry.remove_alias("challenger")
    assert registry.aliases() == {"champion": b}
    registry.set_alias("challenger", a)
    assert registry.rollback().version == a  # the restored champion is no longer also the challenger
    assert registry.aliases() == {"champion": a}


def test_a_registry_written_before_aliases_history_still_works(
    three: tuple[ModelRegistry, list[str]],
) -> None:
    registry, (a, b, _) = three
    index = json.loads(registry.index_path.read_text())
    for key in ("champion_history", "alias_events"):
        del index[key]
    for record in index["versions"].values():
        del record["training_seconds"], record["dataset"]
    registry.index_path.write_text(json.dumps(index))
    assert registry.get(a).training_seconds == registry.get(a).metrics["train_seconds"]
    with pytest.raises(NothingToRollBackError):
        registry.rollback()
    registry.promote(b)
    assert registry.rollback().version == a


# ---- metadata ------------------------------------------------------------------------------------


def test_record_carries_training_metadata(
    tmp_path: Path, trained: tuple[Classifier, dict[str, Any]], small_csv: Path
) -> None:
    classifier, metrics = trained
    registry = ModelRegistry(tmp_path)
    dataset = {"version": "ds-0123456789ab", "content_sha256": "ab" * 32, "rows": 600}
    record = registry.register(classifier, {**metrics, "dataset": dataset}, small_csv, notes="n")
    assert record.training_seconds == metrics["train_seconds"] > 0
    assert record.dataset == dataset
    assert record.data_rows == {"total": 600, "product": 300, "service": 300}
    assert len(record.data_sha256) == 64 and record.notes == "n"
    assert registry.get(record.version) == record  # survives the JSON round trip

    without_dataset = {k: v for k, v in metrics.items() if k != "dataset"}
    overridden = registry.register(
        _renamed(classifier, "-x"), without_dataset, small_csv, data_sha256="cd" * 32, data_rows={"total": 7}
    )
    assert overridden.data_sha256 == "cd" * 32 and overridden.data_rows == {"total": 7}
    assert overridden.dataset is None


def test_register_from_a_dataset_directory_reads_its_manifest(
    tmp_path: Path, trained: tuple[Classifier, dict[str, Any]]
) -> None:
    manifest = {
        "content_sha256": "ef" * 32,
        "rows": 10,
        "splits": {"train": {"rows": 8, "product": 5, "service": 3}, "validation": {"rows": 2, "service": 2}},
    }
    directory = tmp_path / "ds"
    directory.mkdir()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    record = ModelRegistry(tmp_path / "models").register(trained[0], {}, directory)
    assert record.data_sha256 == "ef" * 32
    assert record.data_rows == {
        "total": 10, "train_rows": 8, "validation_rows": 2, "product": 5, "service": 5,
    }  # fmt: skip
    with pytest.raises(ValueError, match="manifest"):
        ModelRegistry(tmp_path / "other").register(trained[0], {}, tmp_path / "models")


def test_from_dict_ignores_unknown_keys_and_fills_new_ones() -> None:
    old = {
        "version": "v1", "artifact": "v1/model.joblib", "artifact_sha256": "0" * 64,
        "featurizer_version": "f", "sklearn_version": "1.5", "data_sha256": "1" * 64,
        "data_rows": {"total": 1}, "metrics": {"train_seconds": 3.5, "dataset": {"version": "ds-1"}},
        "created_at": "2025-01-01T00:00:00+00:00", "something_newer": 1,
    }  # fmt: skip
    record = ModelRecord.from_dict(old)
    assert record.training_seconds == 3.5 and record.dataset == {"version": "ds-1"}
    assert record.notes == ""


# ---- `nomenclature models` -----------------------------------------------------------------------


def test_models_list_json_shape(
    data_dir: Path, three: tuple[ModelRegistry, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    registry, (a, b, c) = three
    registry.set_alias("challenger", c)
    main(["models", "list", "--json"])
    listing = json.loads(capsys.readouterr().out)
    assert listing["aliases"] == {"champion": a, "challenger": c}
    assert [m["version"] for m in listing["models"]] == [a, b, c]
    assert [m["aliases"] for m in listing["models"]] == [["champion"], [], ["challenger"]]
    first = listing["models"][0]
    assert set(first) == {
        "version", "aliases", "created_at", "featurizer_version", "sklearn_version", "artifact_sha256",
        "data_sha256", "data_rows", "accuracy", "macro_f1", "training_seconds", "notes",
    }  # fmt: skip
    assert first["data_rows"]["total"] == 600 and first["notes"] == "model -a"
    assert isinstance(first["macro_f1"], float) and len(first["artifact_sha256"]) == 64

    main(["models", "list"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "aliases", "created_at", "featurizer", "macro-F1", "rows", "notes"]
    assert lines[1].split()[:2] == [a, "champion"] and lines[3].split()[:2] == [c, "challenger"]


def test_models_list_on_an_empty_registry(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["models", "list", "--json"])
    assert json.loads(capsys.readouterr().out) == {"aliases": {}, "models": []}
    main(["models", "list"])
    assert "no models" in capsys.readouterr().out


def test_models_promote_and_rollback_commands(
    data_dir: Path, three: tuple[ModelRegistry, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    registry, (a, _, c) = three
    main(["models", "promote", c, "--as", "challenger"])
    main(["models", "promote", "challenger"])
    assert registry.aliases() == {"champion": c}
    main(["models", "rollback"])
    assert capsys.readouterr().out.splitlines()[-1] == f"champion: {c} -> {a} (rolled back)"
    with pytest.raises(SystemExit) as exc:
        main(["models", "rollback"])
    assert "no previous champion" in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:
        main(["models", "promote", "mlp-missing"])
    assert "no model version or alias 'mlp-missing'" in str(exc.value.code)
    assert registry.aliases() == {"champion": a}


def test_models_show_prints_the_whole_record(
    data_dir: Path,
    trained: tuple[Classifier, dict[str, Any]],
    small_csv: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    classifier, metrics = trained
    importance = {
        group: {
            "macro_f1_drop": drop,
            "macro_f1_drop_std": 0.01,
            "accuracy_drop": drop / 2,
            "present": drop > 0,
        }
        for group, drop in (("words", 0.05), ("char_ngrams", 0.4), ("unit", 0.0))
    }
    dataset = {"version": "ds-0123456789ab", "rows": 600}
    extra = {"global_importance": importance, "dataset": dataset}
    ModelRegistry(data_dir / "models").register(classifier, {**metrics, **extra}, small_csv, notes="shown")

    main(["models", "show", "champion", "--top", "2"])
    out = capsys.readouterr().out
    assert f"version           {classifier.version}" in out
    assert "artifact check    ok" in out and "notes             shown" in out
    assert "dataset           ds-0123456789ab, 600 rows" in out
    assert "\ndataset\n  version                  ds-0123456789ab\n  rows                     600\n" in out
    assert f"macro-F1 {metrics['macro_f1']:.4f}" in out
    assert "class    precision  recall  f1      support" in out
    assert f"training: {metrics['epochs_run']} epochs" in out
    ranked = out.split("global importance")[1].splitlines()
    assert "top 2 of 3" in ranked[0]
    assert [line.split()[0] for line in ranked[2:4]] == ["char_ngrams", "words"]  # strongest first

    main(["models", "show", classifier.version, "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == classifier.version and shown["aliases"] == ["champion"]
    assert shown["artifact_check"] == "ok"
    assert shown["metrics"]["global_importance"] == importance
    assert shown["metrics"]["per_class"] == json.loads(json.dumps(metrics["per_class"]))
    assert shown["training_seconds"] == metrics["train_seconds"] and shown["dataset"] == dataset
    assert [e["action"] for e in shown["alias_events"]] == ["register"]
