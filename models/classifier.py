"""A fitted product/service classifier: MLP + featurizer + version, with cheap per-word explanations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier

from models.attribution import first_layer_deltas, forward, token_scores
from models.featurizer import Featurizer, TokenMatrix

# Outputs are rounded so that they do not depend on the batch an item was scored in (see `net`).
ROUND_DIGITS = 9


@dataclass
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]]
    # (normalised word, gradient×input weight toward `label`), strongest first; only words that push toward
    # the predicted label are listed, so it may hold fewer than `explain` entries or none.
    explanation: list[tuple[str, float]]


class Classifier:
    def __init__(
        self,
        model: MLPClassifier,
        featurizer: Featurizer,
        version: str,
        featurizer_version: str | None = None,
    ) -> None:
        self.model = model
        self.featurizer = featurizer
        self.version = version
        # The featurizer version the weights were trained with; compare with `featurizer.version` (the
        # running code) to detect a featurization change since training.
        self.featurizer_version = featurizer_version or featurizer.version
        self.labels: list[str] = [str(label) for label in model.classes_]

    @property
    def net(self) -> SimpleNamespace:
        """The network as used for inference (built on first use, not pickled).

        Dense float32 matrix products give results that depend on the batch's shape (BLAS picks kernels
        by size), so one item scored in two different micro-batches could differ in the 7th digit. The
        sparse first layer computes each row on its own (deterministic) and stays float32, the fast
        part; the dense layers run in float64 and outputs are rounded to ROUND_DIGITS, so a re-delivered
        item gets the same output as the first time.
        """
        net = self.__dict__.get("_net")
        if net is None:
            model = self.model
            net = self.__dict__["_net"] = SimpleNamespace(
                coefs_=[model.coefs_[0]] + [np.asarray(c, dtype=np.float64) for c in model.coefs_[1:]],
                intercepts_=[model.intercepts_[0]]
                + [np.asarray(b, dtype=np.float64) for b in model.intercepts_[1:]],
                activation=model.activation,
                out_activation_=model.out_activation_,
            )
        return net

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_net", None)
        return state

    def __repr__(self) -> str:
        return f"Classifier(version={self.version!r}, featurizer_version={self.featurizer_version!r})"

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        """Class probabilities (n, n_classes) in the order of `labels`."""
        return forward(self.net, features)[1]

    def predict(
        self, items: Sequence[Mapping[str, Any]], top_k: int = 2, explain: int = 3
    ) -> list[Prediction]:
        """Label, probabilities, the `top_k` classes and, with `explain` > 0, up to `explain` words.

        A word's weight is gradient×input attribution toward the predicted class's logit, summed over the
        word's features (unigram, character n-grams, cues, head-word feature, half of each bigram). Words
        with a non-positive weight are left out: the explanation lists the evidence for the label only.
        """
        if not items:
            return []
        if explain > 0:
            features, tokens = self.featurizer.transform_with_tokens(items)
        else:
            features, tokens = self.featurizer.transform(items), None
        return self.predict_features(features, tokens, top_k=top_k, explain=explain)

    def predict_features(
        self, features: sp.csr_matrix, tokens: TokenMatrix | None, top_k: int = 2, explain: int = 3
    ) -> list[Prediction]:
        """As `predict`, on rows the featurizer already made (`tokens` None: no explanation)."""
        if features.shape[0] == 0:
            return []
        hidden, proba = forward(self.net, features)
        proba = np.round(proba, ROUND_DIGITS)
        predicted = proba.argmax(axis=1)
        if tokens is None or explain <= 0:
            explanations: list[list[tuple[str, float]]] = [[] for _ in range(features.shape[0])]
        else:
            explanations = self._explain(hidden, predicted, tokens, explain)

        labels = self.labels
        k = max(1, min(top_k, len(labels)))
        order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        rows = proba.tolist()
        return [
            Prediction(
                label=labels[best],
                confidence=row[best],
                probabilities=dict(zip(labels, row, strict=True)),
                top_k=[(labels[j], row[j]) for j in ranked],
                explanation=explanation,
            )
            for best, row, ranked, explanation in zip(
                predicted.tolist(), rows, order.tolist(), explanations, strict=True
            )
        ]

    def _explain(
        self, hidden: list[np.ndarray], predicted: np.ndarray, tokens: TokenMatrix, explain: int
    ) -> list[list[tuple[str, float]]]:
        deltas = first_layer_deltas(self.net, hidden, predicted)
        scores = np.round(token_scores(self.net, tokens, deltas), ROUND_DIGITS)
        per_item: list[dict[str, float]] = [{} for _ in range(len(predicted))]
        for item, word, score in zip(tokens.item_index.tolist(), tokens.words, scores.tolist(), strict=True):
            weights = per_item[item]
            weights[word] = weights.get(word, 0.0) + score
        return [
            sorted(((w, s) for w, s in weights.items() if s > 0), key=lambda ws: -ws[1])[:explain]
            for weights in per_item
        ]
