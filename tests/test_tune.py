"""`nomenclature tune` (tools/tune_commands.py, models/tuning/search.py) on a tiny study: a few trials on a
few hundred rows of the bundled dataset (conftest's `reference_dataset`), 1-2 epochs, the cost timed on a few
dozen items. No broker: announcing finds none listening on a free port and says so."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from models.classifier import Classifier
from models.registry import default_model
from models.registry.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from models.training.train import build_model
from models.tuning import search as tuning
from tests.support import checked_occlusion_weights
from tools.cli import main

STUDY = "tiny"
RUN = ["--sample", "300", "--epochs", "1-2", "--cost-items", "40", "--cost-repeats", "1", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, reference_dataset: Path) -> Iterator[Path]:
    """NOMENCLATURE_* for the module: a data dir of its own, the session's bundled dataset as the reference,
    and a broker port nobody listens on."""
    data_dir = tmp_path_factory.mktemp("tune")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "NOMENCLATURE_MODELS_DIR", "SCHEMA_REGISTRY_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("NOMENCLATURE_DATA_DIR", str(data_dir))
        patch.setenv("NOMENCLATURE_REFERENCE_DATASET", str(reference_dataset))
        patch.setenv("NOMENCLATURE_BROKER_PORT", str(_free_port()))
        yield data_dir


def _study(data_dir: Path) -> optuna.Study:
    return optuna.load_study(
        study_name=STUDY, storage=f"sqlite:///{data_dir / 'tuning' / f'{STUDY}.sqlite3'}"
    )


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


@pytest.fixture(scope="module")
def studied(env: Path) -> dict[str, Any]:
    """Two trials, then the same study resumed to three; what the first run left, for comparison."""
    main(["tune", "--trials", "2", "--study", STUDY, *RUN])
    study = _study(env)
    first = {t.number: (t.values, t.params) for t in _complete(study)}
    study.ask()  # a trial left running, as by a run killed in the middle of it
    main(["tune", "--trials", "3", "--study", STUDY, "--no-progress"])  # resumes with the stored options
    return {"first": first}


def _registry(data_dir: Path) -> ModelRegistry:
    return ModelRegistry(data_dir / "models")


def test_a_second_run_resumes_the_study(env: Path, studied: dict[str, Any], reference_dataset: Path) -> None:
    assert (env / "tuning" / f"{STUDY}.sqlite3").is_file()
    study = _study(env)
    trials = _complete(study)
    assert [t.number for t in trials] == [0, 1, 3]  # 2 was the killed run's: marked failed, not counted
    assert study.trials[2].state == optuna.trial.TrialState.FAIL
    for trial in trials[:2]:  # the first run's trials are kept as they were, not run again
        assert (trial.values, trial.params) == studied["first"][trial.number]
    assert trials[0].params == tuning.default_params((1, 2))  # today's settings come first
    assert trials[0].user_attrs["defaults"] is True
    attrs = study.user_attrs
    assert attrs["featurizer_fingerprint"] == tuning.featurizer_fingerprint()
    assert attrs["options"] == {
        "sample": 300,
        "seed": 42,
        "epochs": [1, 2],
        "cost_items": 40,
        "cost_repeats": 1,
    }
    assert attrs["data"]["train_rows"] == 300
    validation_rows = json.loads((reference_dataset / "manifest.json").read_text())["splits"]["validation"]
    assert attrs["data"]["holdout_rows"] > 0
    assert attrs["data"]["selection_rows"] + attrs["data"]["holdout_rows"] == validation_rows["rows"]
    for trial in trials:
        f1, us = trial.values
        assert 0.0 < f1 <= 1.0 and us > 0.0
        assert trial.user_attrs["epochs_run"] in (1, 2)


def test_the_front_in_the_registry_is_optunas(env: Path, studied: dict[str, Any]) -> None:
    document = _registry(env).tuning(STUDY)
    assert document is not None
    best = {t.number: t for t in _study(env).best_trials}
    assert {t["trial"] for t in document["front"]} == set(best)
    for entry in document["front"]:
        trial = best[entry["trial"]]
        assert entry["params"] == trial.params
        assert [entry["macro_f1"], entry["us_per_item"]] == trial.values
        assert entry["config"]["featurizer"]["n_features"] == 2 ** trial.params["features_log2"]
        assert entry["config"]["mlp"]["hidden_layer_sizes"] == [512, 256, 128]
    costs = [entry["us_per_item"] for entry in document["front"]]
    assert costs == sorted(costs)  # fastest first
    assert document["trials"] == {"complete": 3, "failed": 1, "total": 4}
    assert document["objectives"] == {"macro_f1": "maximize", "us_per_item": "minimize"}
    assert document["featurizer_fingerprint"] == tuning.featurizer_fingerprint()
    assert _registry(env).tuning_studies() == [STUDY]


def test_show_prints_the_front_and_writes_the_plot(
    env: Path, studied: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    plot = env / "front.html"
    capsys.readouterr()
    main(["tune", "--show", "--study", STUDY, "--plot", str(plot)])
    out = capsys.readouterr().out
    document = _registry(env).tuning(STUDY)
    assert document is not None
    assert "macro-F1" in out and "µs/item" in out and f"plot: {plot}" in out
    # today's settings' trial reads "0 (defaults)" or "0* (defaults)" when it is on the front
    rows = [[cell for cell in line.split() if cell != "(defaults)"] for line in out.splitlines()]
    for entry in document["front"]:
        row = next(r for r in rows if r and r[0].rstrip("*") == str(entry["trial"]))
        assert row[1] == f"{entry['macro_f1']:.4f}"
    pick = tuning.choose_trial(document["front"], 0.2)["trial"]
    assert any(r and r[0] == f"{pick}*" for r in rows)
    html = plot.read_text(encoding="utf-8")
    assert "Pareto front" in html and "plotly" in html.lower()
    assert "today's settings (#0)" in html and f"--register-best's default (#{pick})" in html

    main(["tune", "--show", "--study", STUDY, "--json"])
    assert json.loads(capsys.readouterr().out)["front"] == document["front"]


def test_a_study_under_changed_featurizer_code_is_refused(
    env: Path, studied: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tuning, "featurizer_fingerprint", lambda: "0" * 64)
    for command in (["--trials", "5"], ["--register-best"]):
        with pytest.raises(SystemExit) as refused:
            main(["tune", "--study", STUDY, *command])
        message = str(refused.value.code)
        assert f"study {STUDY!r} was started with other featurizer code" in message
        assert "would not compare" in message and "--study NEW_NAME" in message
    assert len(_complete(_study(env))) == 3  # nothing ran
    assert CHALLENGER not in _registry(env).aliases()


def test_a_resumed_study_keeps_its_options(env: Path, studied: dict[str, Any]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["tune", "--trials", "5", "--study", STUDY, "--sample", "500"])
    assert "--sample 300 (not 500)" in str(refused.value.code)
    assert len(_complete(_study(env))) == 3


def test_register_best_makes_the_chosen_trial_the_challenger(
    env: Path, studied: dict[str, Any], reference_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _registry(env)
    champion = default_model.install(registry)  # the shipped model: another featurizer than most trials'
    if champion is None:  # the featurizer code changed since it was built: a small champion instead
        data = tuning.prepare_data(reference_dataset, env / "tuning" / "datasets", train_rows=300, seed=1)
        config = tuning.TrialConfig.from_params(tuning.default_params((1, 1)))
        classifier, metrics = tuning.train_tuned(config, data, env / "features", seed=1, progress=False)
        champion = registry.register(classifier, metrics, data.train)
    assert registry.aliases()[CHAMPION] == champion.version
    document = registry.tuning(STUDY)
    assert document is not None
    chosen = tuning.choose_trial(document["front"], 0.2)
    capsys.readouterr()
    main(["tune", "--register-best", "--study", STUDY, "--train-rows", "400"])
    out = capsys.readouterr().out
    aliases = registry.aliases()
    assert aliases[CHAMPION] == champion.version
    record = registry.get(CHALLENGER)
    assert record.version == aliases[CHALLENGER] != champion.version
    assert record.metrics["tuning"]["study"] == STUDY
    assert record.metrics["tuning"]["trial"] == chosen["trial"]
    assert record.metrics["tuning"]["params"] == chosen["params"]
    gate = record.metrics["gate"]
    assert gate["reference"]["rows"] == document["data"]["holdout_rows"]
    assert gate["reference"]["champion_macro_f1"] > 0.5
    assert gate["eligible"] == (
        gate["reference"]["challenger_macro_f1"] >= gate["reference"]["champion_macro_f1"] - 0.005
    )
    assert gate["corrections"]["applies"] is False
    assert tuning.CORRECTIONS_DO_NOT_APPLY in gate["reasons"]
    loaded = registry.load(CHALLENGER)
    config = tuning.TrialConfig.from_params(chosen["params"])
    assert loaded.featurizer.params() == config.featurizer().params()
    assert loaded.model.get_params()["alpha"] == config.alpha
    assert loaded.model.get_params()["batch_size"] == config.batch_size
    assert "nothing announced: no broker answers" in out
    assert f"registered {record.version}" in out
    assert [r["version"] for r in registry.tuning(STUDY)["registered"]] == [record.version]  # type: ignore[index]


def test_the_default_choice_is_the_fastest_trial_close_to_the_best() -> None:
    front = [
        {"trial": 4, "macro_f1": 0.950, "us_per_item": 100.0},
        {"trial": 2, "macro_f1": 0.985, "us_per_item": 200.0},
        {"trial": 7, "macro_f1": 0.989, "us_per_item": 300.0},
        {"trial": 1, "macro_f1": 0.990, "us_per_item": 400.0},
    ]
    assert tuning.choose_trial(front, 0.2)["trial"] == 7
    assert tuning.choose_trial(front, 0.0)["trial"] == 1
    assert tuning.choose_trial(front, 5.0)["trial"] == 4
    with pytest.raises(ValueError, match="empty"):
        tuning.choose_trial([], 0.2)


def test_every_point_of_the_space_featurizes_and_explains() -> None:
    """Each n-gram choice and block switch gives a working featurizer; without embeddings (no dense block)
    an explanation weight is still the probability drop without the part."""
    names = ["Ремонт кровли здания", "Картридж HP CF226X", "Монтаж кондиционера", "Бумага офисная А4"]
    items = [{"name": n} for n in names]
    for ngrams in tuning.CHAR_NGRAMS:
        params = {**tuning.default_params(), "char_ngrams": ngrams, "embeddings": False, "morphology": False}
        featurizer = tuning.TrialConfig.from_params(params).featurizer()
        assert featurizer.transform(items).shape == (4, featurizer.width)
    featurizer = tuning.TrialConfig.from_params({**tuning.default_params(), "embeddings": False}).featurizer()
    model = build_model(0, {"batch_size": 4})
    features, labels = featurizer.transform(items), np.asarray(["service", "product", "service", "product"])
    for _ in range(20):
        model.partial_fit(features, labels, classes=["product", "service"])
    classifier = Classifier(model, featurizer, "t")
    checked = checked_occlusion_weights(classifier, items)
    assert checked >= 2
