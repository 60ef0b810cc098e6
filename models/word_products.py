"""Each word's share of a first layer, computed once: what makes serving's first layer cheap.

An item's hashed counts are mostly its words' own columns (`models.features.featurizer.Composition`), and
the first layer is linear, so the product of an item's counts with the weights is the sum of its words'
products plus a few columns of their own. `WordProducts` keeps, per word, the products of its own columns
(and its embedding in the summed-embedding block) and, where it heads an item, of its head blocks. An item
then costs a dozen row additions where it cost some three hundred rows of the weights, and an occlusion
variant (the item without one word) the word's row.

Every row is a sparse product computed row by row, so it comes out bit-for-bit the same whenever, in any
batch: a prediction does not depend on which words were cached before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from models.features.featurizer import Featurizer, Word

# Words kept per table: 16,384 rows of 1,024 float32 (own columns and summed embedding) are 64 MiB.
TABLE_ROWS = 16_384


class WordTable:
    """Rows of products by word, computed on first use; emptied when full."""

    def __init__(self, compute: Callable[[Sequence[Word]], np.ndarray], width: int, capacity: int) -> None:
        self.compute = compute
        self.capacity = capacity
        self.index: dict[str, int] = {}
        self.table = np.empty((0, width), dtype=np.float32)

    def positions(self, words: Sequence[Word]) -> np.ndarray:
        """Each word's row in `table`, computed where missing; valid until the next call."""
        index = self.index
        missing = list({w.word: w for w in words if w.word not in index}.values())
        if missing and len(index) + len(missing) > self.capacity:
            index.clear()
            missing = list({w.word: w for w in words}.values())
            if len(missing) > self.capacity:  # more than a table's worth in one call: a table of their own
                self.table = np.empty((0, self.table.shape[1]), dtype=np.float32)
        if missing:
            start = len(index)
            end = start + len(missing)
            if end > len(self.table):
                size = max(min(max(2 * end, 1024), self.capacity), end)
                grown = np.empty((size, self.table.shape[1]), dtype=np.float32)
                grown[:start] = self.table[:start]
                self.table = grown
            self.table[start:end] = self.compute(missing)
            for offset, word in enumerate(missing):
                index[word.word] = start + offset
        return np.fromiter((index[w.word] for w in words), dtype=np.int64, count=len(words))

    def rows(self, words: Sequence[Word]) -> np.ndarray:
        """(len(words), width): each word's row."""
        at = self.positions(words)  # before reading `table`, which it may replace
        return self.table[at]


class WordProducts:
    """The first layer's word rows for one model: `own` (a word's columns in the text block | its vector in
    the summed-embedding block) and `head` (its head-word block | its vector in the head-embedding block);
    parts absent from the featurizer are absent from the rows."""

    def __init__(self, featurizer: Featurizer, weights: np.ndarray, capacity: int = TABLE_ROWS) -> None:
        self.featurizer = featurizer
        self.weights = weights  # the first layer's, float32 (width, hidden)
        hidden = weights.shape[1]
        embeddings = featurizer.n_dense > 0
        self.dims = featurizer.n_dense // 2
        head_parts = int(featurizer.n_head_features > 0) + int(embeddings)
        self.own = WordTable(self._own, hidden * (1 + int(embeddings)), capacity)
        self.head = WordTable(self._head, hidden * head_parts, capacity) if head_parts else None

    def _own(self, words: Sequence[Word]) -> np.ndarray:
        blocks = [self._product([w.columns for w in words], [None] * len(words))]
        if self.featurizer.n_dense:
            start = self.featurizer.n_sparse + self.dims  # the summed-embedding block
            blocks.append(self._vectors(words, start))
        return np.hstack(blocks) if len(blocks) > 1 else blocks[0]

    def _head(self, words: Sequence[Word]) -> np.ndarray:
        blocks = []
        if self.featurizer.n_head_features:
            blocks.append(self._product([w.head_block for w in words], [None] * len(words)))
        if self.featurizer.n_dense:
            blocks.append(self._vectors(words, self.featurizer.n_sparse))  # the head-embedding block
        return np.hstack(blocks) if len(blocks) > 1 else blocks[0]

    def _vectors(self, words: Sequence[Word], start: int) -> np.ndarray:
        columns = tuple(range(start, start + self.dims))
        return self._product(
            [columns if w.vector is not None else () for w in words], [w.vector for w in words]
        )

    def _product(self, columns: Sequence[Sequence[int]], values: Sequence[np.ndarray | None]) -> np.ndarray:
        """(rows with 1 at each of `columns`, or the `values` there where given) @ weights, row by row."""
        indptr = np.cumsum([0] + [len(c) for c in columns])
        data = [
            np.ones(len(c), np.float32) if v is None else np.asarray(v, np.float32)
            for c, v in zip(columns, values, strict=True)
        ]
        flat = np.fromiter((c for cs in columns for c in cs), dtype=np.int32, count=int(indptr[-1]))
        matrix = sp.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0, np.float32), flat, indptr),
            shape=(len(columns), self.weights.shape[0]),
        )
        matrix.sum_duplicates()
        return np.asarray(matrix @ self.weights, dtype=np.float32)
