"""Global explanation: permutation importance of feature groups, stored with the model.

A group (the text's words, bigrams, character n-grams, lexical cues, each structured field; see
`models.features.featurizer.FEATURE_GROUPS`) is permuted across the evaluation items: each item keeps its
other groups and takes another item's counts for that group, then features are re-normalised as `transform`
does. The importance is the mean drop of macro-F1 (and of accuracy) over `repeats` seeded permutations.
A group absent from the evaluation items (a field the data never carries) gets 0 and `present: false`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.classifier import Classifier
from models.training.metrics import macro_f1


def permutation_importance(
    classifier: Classifier,
    items: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    *,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per feature group: mean and std of the macro-F1 drop, mean accuracy drop, and whether present."""
    featurizer = classifier.featurizer
    truth = np.asarray(labels)
    class_labels = sorted(set(classifier.labels) | set(truth.tolist()))
    groups = featurizer.group_counts(items)
    total = sum(groups.values())
    names = np.asarray(classifier.labels)

    def scores(counts: Any) -> tuple[float, float]:
        predicted = names[classifier.predict_proba(featurizer.normalize_counts(counts)).argmax(axis=1)]
        return macro_f1(truth, predicted, class_labels), float(np.mean(predicted == truth))

    base_f1, base_accuracy = scores(total)
    rng = np.random.default_rng(seed)
    result: dict[str, dict[str, Any]] = {}
    for group, counts in groups.items():
        if counts.nnz == 0:
            result[group] = {
                "macro_f1_drop": 0.0,
                "macro_f1_drop_std": 0.0,
                "accuracy_drop": 0.0,
                "present": False,
            }
            continue
        f1_drops, accuracy_drops = [], []
        for _ in range(repeats):
            permuted = total - counts + counts[rng.permutation(counts.shape[0])]
            f1, accuracy = scores(permuted)
            f1_drops.append(base_f1 - f1)
            accuracy_drops.append(base_accuracy - accuracy)
        result[group] = {
            "macro_f1_drop": round(float(np.mean(f1_drops)), 6),
            "macro_f1_drop_std": round(float(np.std(f1_drops)), 6),
            "accuracy_drop": round(float(np.mean(accuracy_drops)), 6),
            "present": True,
        }
    return dict(sorted(result.items(), key=lambda kv: -kv[1]["macro_f1_drop"]))
