"""A fitted product/service classifier: MLP + featurizer + version, with occlusion explanations.

Explanation of one item (local): each distinct word of its name, and each structured field it carries, is
left out in turn (`Featurizer.occlusions`); a part's weight is how much the predicted class's probability
drops without it. Names are short, so this costs a handful of extra rows per item, and results are cached
per `Featurizer.occlusion_key` (the same name and fields, the same explanation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier

from models.attribution import forward, forward_from_first_layer
from models.features.featurizer import Featurizer, Occlusions

# Outputs are rounded so that they do not depend on the batch an item was scored in (see `net`).
ROUND_DIGITS = 9
# Explanation weights are probability differences, kept to 6 decimals.
WEIGHT_DIGITS = 6
EXPLANATION_CACHE_SIZE = 50_000
FORWARD_ROWS = 4096  # rows per forward pass over occlusion variants (bounds the dense activations' memory)


@dataclass
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]]
    # (normalised name word or "field=value", drop of the label's probability without it), strongest first;
    # only parts whose removal lowers the label's probability are listed, so it may hold fewer than
    # `explain` entries or none.
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
        state.pop("_explained", None)
        return state

    @property
    def _explanations(self) -> dict[tuple[Any, ...], list[tuple[str, float]]]:
        """Explanations by occlusion key, per classifier (a new model starts empty); cleared when full."""
        cache = self.__dict__.get("_explained")
        if cache is None:
            cache = self.__dict__["_explained"] = {}
        return cache

    def __repr__(self) -> str:
        return f"Classifier(version={self.version!r}, featurizer_version={self.featurizer_version!r})"

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        """Class probabilities (n, n_classes) in the order of `labels`."""
        return forward(self.net, features)[1]

    def predict(
        self, items: Sequence[Mapping[str, Any]], top_k: int = 2, explain: int = 3
    ) -> list[Prediction]:
        """Label, probabilities, the `top_k` classes and, with `explain` > 0, up to `explain` parts."""
        if not items:
            return []
        return self.predict_features(self.featurizer.transform(items), items, top_k=top_k, explain=explain)

    def predict_features(
        self,
        features: sp.csr_matrix,
        items: Sequence[Mapping[str, Any]],
        top_k: int = 2,
        explain: int = 3,
    ) -> list[Prediction]:
        """As `predict`, on the rows the featurizer made of `items`."""
        if features.shape[0] == 0:
            return []
        proba = np.round(forward(self.net, features)[1], ROUND_DIGITS)
        predicted = proba.argmax(axis=1)
        if explain > 0:
            explanations = self._explain(items, predicted, proba, explain)
        else:
            explanations = [[] for _ in range(features.shape[0])]

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

    def _occluded_proba(self, occlusions: Occlusions) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of each item and of each of its occlusion variants.

        A variant's counts are the item's minus the part's contribution, re-normalised per block as
        `transform` does. The first layer is linear, so a variant's is the item's product with W1 minus
        the part's (a few dozen columns) and its block norms follow from the part's columns alone,
        instead of a full product per variant. The item's own probabilities come from the same
        arithmetic, so a part that changes nothing weighs exactly 0.
        """
        net = self.net
        n_text = self.featurizer.n_text_features
        counts, parts, owner = occlusions.counts, occlusions.contributions, occlusions.owner
        item_text, item_field = _block_products(counts, net.coefs_[0], n_text)
        part_text, part_field = _block_products(parts, net.coefs_[0], n_text)
        item_squares = _block_sums(counts, n_text, np.square(counts.data, dtype=np.float64))
        # (c − d)² − c² over the part's columns, with c the owner item's count there
        part_rows = np.repeat(np.arange(parts.shape[0]), np.diff(parts.indptr))
        c = _values_at(counts, owner[part_rows], parts.indices)
        d = parts.data.astype(np.float64)
        variant_squares = item_squares[owner] + _block_sums(parts, n_text, d * d - 2 * c * d)

        def first_layer(text: np.ndarray, field: np.ndarray, squares: np.ndarray) -> np.ndarray:
            norms = np.sqrt(np.maximum(squares, 0.0))
            norms[norms < 1e-9] = 1.0  # an empty block contributes nothing
            return text / norms[:, :1] + field / norms[:, 1:] + net.intercepts_[0]

        base = forward_from_first_layer(net, first_layer(item_text, item_field, item_squares))[1]
        variants = [
            forward_from_first_layer(
                net,
                first_layer(
                    item_text[owner[s]] - part_text[s],
                    item_field[owner[s]] - part_field[s],
                    variant_squares[s],
                ),
            )[1]
            for s in (slice(start, start + FORWARD_ROWS) for start in range(0, len(owner), FORWARD_ROWS))
        ]
        empty = np.zeros((0, len(self.labels)))
        return np.round(base, ROUND_DIGITS), np.round(np.vstack(variants or [empty]), ROUND_DIGITS)

    def _explain(
        self, items: Sequence[Mapping[str, Any]], predicted: np.ndarray, proba: np.ndarray, explain: int
    ) -> list[list[tuple[str, float]]]:
        """Occlusion explanations, from the cache or computed for all misses in one forward pass."""
        cache = self._explanations
        featurizer = self.featurizer
        results: list[list[tuple[str, float]] | None] = []
        misses: dict[tuple[Any, ...], list[int]] = {}
        for i, item in enumerate(items):
            key = (featurizer.occlusion_key(item), explain)
            found = cache.get(key)
            results.append(found)
            if found is None:
                misses.setdefault(key, []).append(i)
        if misses:
            first = [rows[0] for rows in misses.values()]
            occlusions = featurizer.occlusions_of_keys([key[0] for key in misses])
            base, variants = self._occluded_proba(occlusions)
            if len(cache) + len(misses) > EXPLANATION_CACHE_SIZE:
                cache.clear()
            start = 0
            for (key, rows), i, parts, whole in zip(
                misses.items(), first, occlusions.parts, base, strict=True
            ):
                label = predicted[i]
                drops = whole[label] - variants[start : start + len(parts), label]
                start += len(parts)
                weights = [
                    (part, round(float(d), WEIGHT_DIGITS)) for part, d in zip(parts, drops, strict=True)
                ]
                ranked = sorted((pw for pw in weights if pw[1] > 0), key=lambda pw: -pw[1])[:explain]
                cache[key] = ranked
                for row in rows:
                    results[row] = ranked
        return [list(found) for found in results]  # type: ignore[arg-type]


def _block_products(counts: sp.csr_matrix, weights: np.ndarray, n_text: int) -> tuple[np.ndarray, np.ndarray]:
    """(text block @ its weights, field block @ its weights) in float64, without slicing the matrix."""
    in_field = counts.indices >= n_text
    field = sp.csr_matrix(
        (np.where(in_field, counts.data, 0), counts.indices.copy(), counts.indptr.copy()), shape=counts.shape
    )
    field.eliminate_zeros()
    field_product = np.asarray(field @ weights, dtype=np.float64)
    return np.asarray(counts @ weights, dtype=np.float64) - field_product, field_product


def _block_sums(counts: sp.csr_matrix, n_text: int, values: np.ndarray) -> np.ndarray:
    """Per row, the sum of `values` (one per stored entry) over the text block and over the field block."""
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    keys = rows * 2 + (counts.indices >= n_text)
    return np.bincount(keys, weights=values, minlength=2 * counts.shape[0]).reshape(-1, 2)


def _values_at(matrix: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """matrix[rows[i], columns[i]] for each i (float64; 0 where nothing is stored); indices must be sorted."""
    width = np.int64(matrix.shape[1])
    stored_rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = stored_rows * width + matrix.indices  # ascending: rows in order, sorted columns within a row
    wanted = rows.astype(np.int64) * width + columns
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[at] == wanted if len(keys) else np.zeros(len(wanted), dtype=bool)
    return np.where(found, matrix.data[at] if len(keys) else 0.0, 0.0).astype(np.float64)
