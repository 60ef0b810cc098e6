"""Permutation importance of feature groups (models/training/importance.py) on a model trained once
(conftest)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models.classifier import Classifier
from models.features.featurizer import FEATURE_GROUPS
from models.registry.model_registry import ModelRegistry
from models.training.importance import permutation_importance
from tools.common import BUNDLED_DATA


@pytest.fixture(scope="module")
def classifier(trained_models: Path) -> Classifier:
    return ModelRegistry(trained_models).load("champion")


@pytest.fixture(scope="module")
def sample() -> tuple[list[dict[str, str]], list[str]]:
    frame = pd.read_csv(BUNDLED_DATA).sample(600, random_state=5)
    units = ["шт", "усл. ед."]
    items = [
        {"name": name, "unit": units[label == "service"]}
        for name, label in zip(frame.name, frame.label, strict=True)
    ]
    return items, frame.label.tolist()


def test_every_group_is_scored_and_absent_ones_are_flagged(
    classifier: Classifier, sample: tuple[list[dict[str, str]], list[str]]
) -> None:
    items, labels = sample
    importance = permutation_importance(classifier, items, labels, repeats=2, seed=1)
    assert set(importance) == set(FEATURE_GROUPS)
    assert not importance["okved_code"]["present"] and importance["okved_code"]["macro_f1_drop"] == 0
    assert importance["unit"]["present"]
    # the text carries the decision: scrambling character n-grams, or the embeddings, across items hurts
    # (less than with n-grams alone: lemmas, the head block and embeddings carry much of the same)
    assert importance["char_ngrams"]["macro_f1_drop"] > 0.02
    assert importance["embeddings"]["macro_f1_drop"] > 0.02
    drops = [v["macro_f1_drop"] for v in importance.values()]
    assert drops == sorted(drops, reverse=True)


def test_importance_is_reproducible_with_a_seed(
    classifier: Classifier, sample: tuple[list[dict[str, str]], list[str]]
) -> None:
    items, labels = sample
    assert permutation_importance(classifier, items, labels, seed=4) == permutation_importance(
        classifier, items, labels, seed=4
    )
