"""A fitted product/service classifier: MLP + featurizer + version, with occlusion explanations.

Explanation of one item (local): each distinct word of its name, and each structured field it carries, is
left out in turn (`Featurizer.occlusions`); a part's weight is how much the predicted class's probability
drops without it. Names are short, so this costs a handful of extra rows per item, and results are cached
per `Featurizer.occlusion_key` (the same name and fields, the same explanation).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier

from models.attribution import ServingNet, serving_net
from models.features.featurizer import Composition, Featurizer, Occlusions
from models.word_products import WordProducts

# Outputs are rounded (float32 products carry about 7 significant digits; see `net`).
ROUND_DIGITS = 9
# Explanation weights are probability differences, kept to 6 decimals.
WEIGHT_DIGITS = 6
EXPLANATION_CACHE_SIZE = 50_000
EXPLAIN_CHUNK = 64  # items explained together


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
        state.pop("_words", None)
        state.pop("_lock", None)
        return state

    @property
    def _explanations(self) -> dict[tuple[Any, ...], tuple[tuple[str, float], ...]]:
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
        """Class probabilities (n, n_classes) in the order of `labels`, from a feature matrix (training and
        evaluation; `predict` computes the same from the items' words, equal to float32 precision)."""
        net = self.net
        return net.proba(net.first_layer(features))

    def predict(
        self,
        items: Sequence[Mapping[str, Any]],
        top_k: int = 2,
        explain: int = 3,
        composed: Composition | None = None,
    ) -> list[Prediction]:
        """Label, probabilities, the `top_k` classes and, with `explain` > 0, up to `explain` parts;
        `composed`, when given, is `featurizer.composed(items)` (the caller's)."""
        if not items:
            return []
        if composed is None:
            composed = self.featurizer.composed(items)
        with self._predicting:  # one at a time: the word tables' rows are read where they were found
            layer = self._first_layer(composed)
            proba = np.round(self.net.proba(layer.first), ROUND_DIGITS)
            predicted = proba.argmax(axis=1)
            if explain > 0:
                explanations = self._explain(items, predicted, proba, explain, composed, layer)
            else:
                explanations = [[] for _ in range(len(items))]

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

    @property
    def _predicting(self) -> threading.Lock:
        """Held while predicting (threads share a classifier where scoring runs in the worker's threads)."""
        return self.__dict__.setdefault("_lock", threading.Lock())

    @property
    def _word_products(self) -> WordProducts:
        """The first layer's rows per word (`models.word_products`), per classifier, not pickled."""
        found = self.__dict__.get("_words")
        if found is None:
            found = self.__dict__["_words"] = WordProducts(self.featurizer, self.net.first_weights)
        return found

    def _first_layer(self, composed: Composition) -> FirstLayer:
        """The items' first-layer pre-activations, block by block: a block's product is its counts @ its
        weights, from the word rows (`WordProducts`) and the few columns of the items' own; the first layer
        is the intercept plus each block's product over its norm (the features are the counts normalised per
        block). Each row from its item alone: the same bits in any batch."""
        featurizer = self.featurizer
        weights = self.net.first_weights
        hidden = weights.shape[1]
        counts, dense = composed.hashed, composed.dense
        n = counts.shape[0]
        n_hashed = int((featurizer.block_starts < featurizer.n_sparse).sum())
        words = self._word_products
        # the occurrences' columns moved from the batch's words to their rows in the table, which is then
        # read in place
        occurrences = composed.occurrences
        at = words.own.positions(composed.words)[occurrences.indices]
        table = words.own.table
        in_table = sp.csr_matrix((occurrences.data, at, occurrences.indptr), shape=(n, len(table)))
        own = np.asarray(in_table @ table, dtype=np.float32)
        every = np.arange(n)
        extras = composed.extras
        extra_blocks = featurizer.block_of(extras.indices)
        text = own[:, :hidden] + _rows_product(extras, every, extra_blocks == 0, weights)
        products = [text, _rows_product(extras, every, extra_blocks == 1, weights)]
        squares = _block_sums(counts, featurizer, n_hashed, np.square(counts.data, dtype=np.float64))
        if words.head is not None:
            head = np.zeros((n, words.head.table.shape[1]), dtype=np.float32)
            with_head = [i for i, word in enumerate(composed.heads) if word is not None]
            if with_head:
                head[with_head] = words.head.rows([composed.heads[i] for i in with_head])
            if featurizer.n_head_features:
                products.append(head[:, :hidden])
            if featurizer.n_dense:
                dims = words.dims
                products += [head[:, -hidden:], own[:, hidden:]]
                squares = np.column_stack(
                    [squares, _square_sums(dense[:, :dims]), _square_sums(dense[:, dims:])]
                )
        inverse = (1.0 / _norms(squares)).astype(np.float32)
        first = self.net.first_intercept + products[0] * inverse[:, :1]
        for k in range(1, len(products)):
            first += products[k] * inverse[:, k : k + 1]
        return FirstLayer(first, products, inverse, squares)

    def _variants_first(
        self, occlusions: Occlusions, layer: FirstLayer, counts: sp.csr_matrix, item_dense: np.ndarray
    ) -> np.ndarray:
        """The first layer of each occlusion variant (`occlusions` of the items `layer` holds, in order,
        whose hashed counts and embedding blocks are `counts` and `item_dense`).

        A variant's counts are the item's minus the part's contribution, re-normalised per block: each block
        the part touches is replaced by (the item's block product − the part's) / the variant's block norm.
        A word touches the text block (its own row, its roles and bigrams), its vector's blocks and, as the
        head word, the head blocks; a field its block. Block norms follow from the part's columns alone. A
        part that changes nothing leaves the item's first layer as it is, so it weighs exactly 0.
        """
        featurizer = self.featurizer
        weights = self.net.first_weights
        hidden = weights.shape[1]
        n_sparse = featurizer.n_sparse
        n_hashed = int((featurizer.block_starts < n_sparse).sum())
        parts, part_dense = occlusions.hashed, occlusions.vectors
        owner = occlusions.owner
        n_parts = len(owner)
        words = self._word_products

        # each part's rows in the word tables: its word's own row (times its occurrences), its head row
        with_word = [i for i, word in enumerate(occlusions.part_words) if word is not None]
        own_at = np.zeros(n_parts, dtype=np.int64)
        if with_word:
            own_at[with_word] = words.own.positions([occlusions.part_words[i] for i in with_word])  # type: ignore[misc]
        occurrences = occlusions.part_occurrences[:, None]
        head_at = np.zeros(n_parts, dtype=np.int64)
        if words.head is not None:
            heads = np.flatnonzero(occlusions.part_heads | (part_dense[:, : words.dims].any(axis=1)))
            if len(heads):
                head_at[heads] = words.head.positions([occlusions.part_words[i] for i in heads])  # type: ignore[misc]
        extras = occlusions.part_extras
        extra_blocks = featurizer.block_of(extras.indices)

        # per block: the parts touching it, their products and the variants' squared norms
        part_rows = np.repeat(np.arange(parts.shape[0]), np.diff(parts.indptr))
        part_blocks = featurizer.block_of(parts.indices)
        # (c − d)² − c² over the part's columns, with c the owner item's count there
        c = counts.toarray()[owner[part_rows], parts.indices].astype(np.float64)
        d = parts.data.astype(np.float64)
        square_change = _block_sums(parts, featurizer, n_hashed, d * d - 2 * c * d)
        touched: list[np.ndarray] = []
        part_products: list[np.ndarray] = []
        variant_squares: list[np.ndarray] = []
        for block in range(n_hashed):
            rows = np.flatnonzero(np.bincount(part_rows[part_blocks == block], minlength=n_parts))
            touched.append(rows)
            if block == 0:  # only words touch it
                product = words.own.table[own_at[rows], :hidden] * occurrences[rows]
                product += _rows_product(extras, rows, extra_blocks == 0, weights)
            elif block == 1:
                product = _rows_product(extras, rows, extra_blocks == 1, weights)
            else:  # only the head word touches it
                assert words.head is not None
                product = words.head.table[head_at[rows], :hidden]
            part_products.append(product)
            variant_squares.append(layer.squares[owner[rows], block] + square_change[rows, block])
        if featurizer.n_dense:
            assert words.head is not None
            dims = words.dims
            for a, b in ((0, dims), (dims, 2 * dims)):
                rows = np.flatnonzero(part_dense[:, a:b].any(axis=1))
                touched.append(rows)
                if a == 0:  # the head word's vector
                    part_products.append(words.head.table[head_at[rows], -hidden:])
                else:  # every word's vector
                    part_products.append(words.own.table[own_at[rows], hidden:] * occurrences[rows])
                remaining = item_dense[owner[rows], a:b].astype(np.float64) - part_dense[rows, a:b]
                variant_squares.append(_square_sums(remaining))

        variant_first = layer.first[owner]
        for k, rows in enumerate(touched):
            if not len(rows):
                continue
            # (I − P) / n_variant − I / n_item = I · (1/n_variant − 1/n_item) − P / n_variant
            items = owner[rows]
            variant_inverse = (1.0 / _norms(variant_squares[k])).astype(np.float32)
            change = layer.products[k][items]
            change *= (variant_inverse - layer.inverse[items, k])[:, None]
            part = part_products[k]  # a copy of the table's rows: scaled in place
            part *= variant_inverse[:, None]
            change -= part
            if len(rows) == len(owner):
                variant_first += change
            else:
                variant_first[rows] += change  # rows are distinct
        return variant_first

    def _explain(
        self,
        items: Sequence[Mapping[str, Any]],
        predicted: np.ndarray,
        proba: np.ndarray,
        explain: int,
        composed: Composition,
        layer: FirstLayer,
    ) -> list[list[tuple[str, float]]]:
        """Occlusion explanations, from the cache or computed for all misses in one forward pass."""
        cache = self._explanations
        featurizer = self.featurizer
        results: list[tuple[tuple[str, float], ...] | None] = []
        misses: dict[tuple[Any, ...], list[int]] = {}
        for i, item in enumerate(items):
            key = (featurizer.occlusion_key(item), explain)
            found = cache.get(key)
            results.append(found)
            if found is None:
                misses.setdefault(key, []).append(i)
        if len(cache) + len(misses) > EXPLANATION_CACHE_SIZE:
            cache.clear()
        missed = list(misses.items())
        # in chunks whose variants' arrays stay in the processor's cache (the arithmetic is row by row)
        for chunk in range(0, len(missed), EXPLAIN_CHUNK):
            keys = missed[chunk : chunk + EXPLAIN_CHUNK]
            first = [rows[0] for _, rows in keys]
            occlusions = featurizer.occlusions([items[i] for i in first], with_counts=False)
            variants_first = self._variants_first(
                occlusions, layer.take(first), composed.hashed[first], composed.dense[first]
            )
            variants = np.round(self.net.proba(variants_first), ROUND_DIGITS)
            start = 0
            for (key, rows), i, parts in zip(keys, first, occlusions.parts, strict=True):
                label = predicted[i]
                drops = proba[i, label] - variants[start : start + len(parts), label]
                start += len(parts)
                weights = [
                    (part, round(float(d), WEIGHT_DIGITS)) for part, d in zip(parts, drops, strict=True)
                ]
                # a tuple of tuples of str and float: the garbage collector stops tracking it
                ranked = tuple(sorted((pw for pw in weights if pw[1] > 0), key=lambda pw: -pw[1])[:explain])
                cache[key] = ranked
                for row in rows:
                    results[row] = ranked
        return [list(found) for found in results]  # type: ignore[arg-type]


class FirstLayer(NamedTuple):
    """Items' first-layer pre-activations and what they are made of (`Classifier._first_layer`)."""

    first: np.ndarray  # (n, hidden) float32
    products: list[np.ndarray]  # per block: (n, hidden) float32, the block's counts @ its weights
    inverse: np.ndarray  # (n, blocks) float32: 1 / each block's norm
    squares: np.ndarray  # (n, blocks) float64: each block's squared norm

    def take(self, rows: list[int]) -> FirstLayer:
        return FirstLayer(
            self.first[rows], [p[rows] for p in self.products], self.inverse[rows], self.squares[rows]
        )


def _square_sums(values: np.ndarray) -> np.ndarray:
    """Each row's sum of squares, in float64."""
    return np.square(values, dtype=np.float64).sum(axis=1)


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
    width = weights.shape[0]
    sub = sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=(len(rows), width))
    return np.asarray(sub @ weights)


def _block_sums(
    counts: sp.csr_matrix, featurizer: Featurizer, n_blocks: int, values: np.ndarray
) -> np.ndarray:
    """Per row and block, the sum of `values` (one per stored entry) over the block: (rows, n_blocks)."""
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    keys = rows * n_blocks + featurizer.block_of(counts.indices)
    return np.bincount(keys, weights=values, minlength=n_blocks * counts.shape[0]).reshape(-1, n_blocks)
