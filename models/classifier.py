"""A fitted product/service classifier: MLP + featurizer + version, with occlusion explanations.

Explanation of one item (local): each distinct word of its name, and each structured field it carries, is
left out in turn (`Featurizer.occlusions`); a part's weight is how much the predicted class's probability
drops without it. Names are short, so this costs a handful of extra rows per item, and results are cached
per `Featurizer.occlusion_key` (the same name and fields, the same explanation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier

from models.attribution import ServingNet, serving_net
from models.features.featurizer import Featurizer, Occlusions

# Outputs are rounded (float32 products carry about 7 significant digits; see `net`).
ROUND_DIGITS = 9
# Explanation weights are probability differences, kept to 6 decimals.
WEIGHT_DIGITS = 6
EXPLANATION_CACHE_SIZE = 50_000


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
    temperature: float = 1.0  # what classifiers pickled before calibration existed have

    def __init__(
        self,
        model: MLPClassifier,
        featurizer: Featurizer,
        version: str,
        featurizer_version: str | None = None,
        temperature: float = 1.0,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, not {temperature!r}")
        self.model = model
        self.featurizer = featurizer
        self.version = version
        # The featurizer version the weights were trained with; compare with `featurizer.version` (the
        # running code) to detect a featurization change since training.
        self.featurizer_version = featurizer_version or featurizer.version
        self.labels: list[str] = [str(label) for label in model.classes_]
        # Temperature scaling fitted on held-out rows (`models.training.calibration`): the output layer's
        # logits are divided by it, so every probability this classifier gives is the calibrated one.
        self.temperature = float(temperature)

    @property
    def net(self) -> ServingNet:
        """The network as used for inference (built on first use, not pickled): float32, each row's output
        independent of the batch it is scored in (`models.attribution.ServingNet`), so a re-delivered item
        gets the same output as the first time; the output layer is divided by the temperature. Outputs
        are rounded to ROUND_DIGITS."""
        net = self.__dict__.get("_net")
        if net is None:
            net = self.__dict__["_net"] = serving_net(self.model, self.temperature)
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
        return (
            f"Classifier(version={self.version!r}, featurizer_version={self.featurizer_version!r}, "
            f"temperature={self.temperature!r})"
        )

    def predict_proba(self, features: sp.csr_matrix) -> np.ndarray:
        """Class probabilities (n, n_classes) in the order of `labels`."""
        net = self.net
        return net.proba(net.first_layer(features))

    def predict(
        self, items: Sequence[Mapping[str, Any]], top_k: int = 2, explain: int = 3
    ) -> list[Prediction]:
        """Label, probabilities, the `top_k` classes and, with `explain` > 0, up to `explain` parts."""
        if not items:
            return []
        counts = self.featurizer.counts(items)
        features = self.featurizer.normalize_counts(counts)
        return self.predict_features(features, items, top_k=top_k, explain=explain, counts=counts)

    def predict_features(
        self,
        features: sp.csr_matrix,
        items: Sequence[Mapping[str, Any]],
        top_k: int = 2,
        explain: int = 3,
        counts: sp.csr_matrix | None = None,
    ) -> list[Prediction]:
        """As `predict`, on the rows the featurizer made of `items` (and, when the caller has them, their
        un-normalised `counts`, which explanations would otherwise assemble again)."""
        if features.shape[0] == 0:
            return []
        proba = np.round(self.predict_proba(features), ROUND_DIGITS)
        predicted = proba.argmax(axis=1)
        if explain > 0:
            explanations = self._explain(items, predicted, proba, explain, counts)
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
        `transform` does. The first layer is linear, so a variant's is the item's, with each block the part
        touches replaced by (the item's block product − the part's) / the variant's block norm: a word
        touches the text block, its vector's blocks and, as the head word, the head blocks; a field its
        block. Block norms follow from the part's columns alone. The item's own first layer comes from the
        same arithmetic, so a part that changes nothing weighs exactly 0.
        """
        net = self.net
        featurizer = self.featurizer
        weights = net.first_weights
        n_sparse = featurizer.n_sparse
        n_hashed = int((featurizer.block_starts < n_sparse).sum())  # the blocks of hashed columns
        dense_starts = featurizer.block_starts[n_hashed:]  # none without embeddings
        dense_ends = [*featurizer.block_starts[n_hashed + 1 :], featurizer.width][: len(dense_starts)]
        dense_blocks = [
            (int(a) - n_sparse, int(b) - n_sparse) for a, b in zip(dense_starts, dense_ends, strict=True)
        ]
        counts, item_dense = _split_dense(occlusions.counts, n_sparse)
        parts, part_dense = _split_dense(occlusions.contributions, n_sparse)
        owner = occlusions.owner
        dense_weights = np.asarray(weights[n_sparse:], dtype=np.float64)

        # per block: the items' products and squared norms; the parts touching it, their products and the
        # variants' squared norms
        item_products = _block_products(counts, weights, featurizer, n_hashed)
        item_squares = _block_sums(counts, featurizer, n_hashed, np.square(counts.data, dtype=np.float64))
        part_rows = np.repeat(np.arange(parts.shape[0]), np.diff(parts.indptr))
        part_blocks = featurizer.block_of(parts.indices)
        # (c − d)² − c² over the part's columns, with c the owner item's count there
        c = _values_at(counts, owner[part_rows], parts.indices)
        d = parts.data.astype(np.float64)
        square_change = _block_sums(parts, featurizer, n_hashed, d * d - 2 * c * d)
        touched: list[np.ndarray] = []
        part_products: list[np.ndarray] = []
        variant_squares: list[np.ndarray] = []
        for block in range(n_hashed):
            rows = np.unique(part_rows[part_blocks == block])
            touched.append(rows)
            part_products.append(_rows_product(parts, rows, part_blocks == block, weights))
            variant_squares.append(item_squares[owner[rows], block] + square_change[rows, block])
        for a, b in dense_blocks:
            item_products.append(item_dense[:, a:b] @ dense_weights[a:b])
            item_squares = np.column_stack([item_squares, np.square(item_dense[:, a:b]).sum(axis=1)])
            rows = np.flatnonzero(part_dense[:, a:b].any(axis=1))
            touched.append(rows)
            part_products.append(part_dense[rows, a:b] @ dense_weights[a:b])
            remaining = item_dense[owner[rows], a:b] - part_dense[rows, a:b]
            variant_squares.append(np.square(remaining).sum(axis=1))

        # float32 from here: elementwise, so as deterministic, and half the memory traffic of float64
        inverse = (1.0 / _norms(item_squares)).astype(np.float32)
        products = [np.asarray(product, dtype=np.float32) for product in item_products]
        first = net.first_intercept + products[0] * inverse[:, :1]
        for k in range(1, len(products)):
            first += products[k] * inverse[:, k : k + 1]
        variant_first = first[owner]
        for k, rows in enumerate(touched):
            if not len(rows):
                continue
            # (I − P) / n_variant − I / n_item = I · (1/n_variant − 1/n_item) − P / n_variant
            items = owner[rows]
            variant_inverse = (1.0 / _norms(variant_squares[k])).astype(np.float32)
            change = products[k][items]
            change *= (variant_inverse - inverse[items, k])[:, None]
            part = np.asarray(part_products[k], dtype=np.float32)
            part *= variant_inverse[:, None]
            change -= part
            if len(rows) == len(owner):
                variant_first += change
            else:
                variant_first[rows] += change  # rows are distinct
        return np.round(net.proba(first), ROUND_DIGITS), np.round(net.proba(variant_first), ROUND_DIGITS)

    def _explain(
        self,
        items: Sequence[Mapping[str, Any]],
        predicted: np.ndarray,
        proba: np.ndarray,
        explain: int,
        counts: sp.csr_matrix | None = None,
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
            occlusions = featurizer.occlusions(
                [items[i] for i in first], counts=None if counts is None else counts[first]
            )
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


def _block_products(
    counts: sp.csr_matrix, weights: np.ndarray, featurizer: Featurizer, n_blocks: int
) -> list[np.ndarray]:
    """Each block of the rows @ its weights: each stored entry is multiplied once."""
    blocks = featurizer.block_of(counts.indices)
    every_row = np.arange(counts.shape[0])
    return [_rows_product(counts, every_row, blocks == block, weights) for block in range(n_blocks)]


def _norms(squares: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.maximum(squares, 0.0))
    norms[norms < 1e-6] = 1.0  # an empty block contributes nothing
    return norms


def _rows_product(
    matrix: sp.csr_matrix, rows: np.ndarray, entries: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(the `rows` of `matrix`, keeping only its stored `entries` (a mask)) @ weights, in the weights'
    precision (float32: the sparse product is computed row by row in it, so nothing is gained by widening)."""
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    position = np.full(matrix.shape[0], -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    keep = entries & (position[row_of] >= 0)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(position[row_of[keep]], minlength=len(rows)), out=indptr[1:])
    sub = sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=(len(rows), matrix.shape[1]))
    return np.asarray(sub @ weights)


def _split_dense(matrix: sp.csr_matrix, n_sparse: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """(the hashed columns as CSR of the same shape, the columns from `n_sparse` on as a float64 array)."""
    dense_entries = matrix.indices >= n_sparse
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    dense = np.zeros((matrix.shape[0], matrix.shape[1] - n_sparse), dtype=np.float64)
    dense[rows[dense_entries], matrix.indices[dense_entries] - n_sparse] = matrix.data[dense_entries]
    if not dense_entries.any():
        return matrix, dense
    keep = ~dense_entries
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=matrix.shape[0]), out=indptr[1:])
    hashed = sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)
    return hashed, dense


def _block_sums(
    counts: sp.csr_matrix, featurizer: Featurizer, n_blocks: int, values: np.ndarray
) -> np.ndarray:
    """Per row and block, the sum of `values` (one per stored entry) over the block: (rows, n_blocks)."""
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    keys = rows * n_blocks + featurizer.block_of(counts.indices)
    return np.bincount(keys, weights=values, minlength=n_blocks * counts.shape[0]).reshape(-1, n_blocks)


def _values_at(matrix: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """matrix[rows[i], columns[i]] for each i (float64; 0 where nothing is stored); indices must be sorted."""
    width = np.int64(matrix.shape[1])
    stored_rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = stored_rows * width + matrix.indices  # ascending: rows in order, sorted columns within a row
    wanted = rows.astype(np.int64) * width + columns
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[at] == wanted if len(keys) else np.zeros(len(wanted), dtype=bool)
    return np.where(found, matrix.data[at] if len(keys) else 0.0, 0.0).astype(np.float64)
