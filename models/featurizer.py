"""Hashed sparse features of nomenclature items: the one featurization for training, batch and stream.

Text is the name, plus full_name when it adds words (full_name alone when it contains the name). Text
features: word unigrams, word bigrams (within name or full_name, never across), the head word (first word),
character 3–5-grams of each space-padded word, and lexical goods/services cues (`models.lexical_cues`).

Column layout: the first ``n_features - n_field_features`` columns hold the text features; the last
``n_field_features`` columns hold the structured fields (unit, kind, type_hint tokens; OKVED division and
section; HS code presence and chapter). Values are counts, and each block is L2-normalised on its own, so an
item's text values do not depend on how many structured fields it carries and the field block can stay
inert until the model is trained on data that has fields.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils import murmurhash3_32

from models import lexical_cues, text_normalization
from models.lexical_cues import word_cues
from models.text_normalization import fix_lookalikes, split_words

# A cached word: (normalised word, its text columns, its head-word column).
_WordEntry = tuple[str, tuple[int, ...], int]

_DIGITS = re.compile(r"\D+")

# OKVED2 section letter for each two-digit division.
_OKVED_SECTIONS: tuple[tuple[int, int, str], ...] = (
    (1, 3, "A"), (5, 9, "B"), (10, 33, "C"), (35, 35, "D"), (36, 39, "E"), (41, 43, "F"), (45, 47, "G"),
    (49, 53, "H"), (55, 56, "I"), (58, 63, "J"), (64, 66, "K"), (68, 68, "L"), (69, 75, "M"), (77, 82, "N"),
    (84, 84, "O"), (85, 85, "P"), (86, 88, "Q"), (90, 93, "R"), (94, 96, "S"), (97, 98, "T"), (99, 99, "U"),
)  # fmt: skip


@cache
def _source_digest() -> str:
    """Hash of every module whose code decides the features."""
    digest = hashlib.sha256()
    for module_file in (__file__, text_normalization.__file__, lexical_cues.__file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()


def _okved_section(division: int) -> str | None:
    for low, high, section in _OKVED_SECTIONS:
        if low <= division <= high:
            return section
    return None


class TokenMatrix:
    """Per-word-occurrence rows whose sum (plus the field block) is the item's feature row.

    ``matrix[r]`` holds the share of the feature values contributed by occurrence ``r``: its unigram,
    character n-grams, cues and head-word columns in full and half of each bigram it takes part in.
    """

    __slots__ = ("item_index", "matrix", "words")

    def __init__(self, matrix: sp.csr_matrix, item_index: np.ndarray, words: list[str]) -> None:
        self.matrix = matrix
        self.item_index = item_index
        self.words = words


class Featurizer:
    def __init__(
        self,
        n_features: int = 4096,
        n_field_features: int = 256,
        ngram_range: tuple[int, int] = (3, 5),
        cache_size: int = 200_000,
    ) -> None:
        if not 0 < n_field_features < n_features:
            raise ValueError("n_field_features must be positive and smaller than n_features")
        self.n_features = n_features
        self.n_field_features = n_field_features
        self.n_text_features = n_features - n_field_features
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.cache_size = cache_size
        self._reset_caches()

    def _reset_caches(self) -> None:
        # Plain dicts cleared when full: bounded, and cheaper per lookup than an LRU on the hot path.
        self._words: dict[str, _WordEntry] = {}
        self._bigrams: dict[tuple[str, str], int] = {}
        self._fields: dict[tuple[str, str], tuple[int, ...]] = {}
        self._field_sets: dict[tuple[Any, ...], tuple[int, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_field_features": self.n_field_features,
            "ngram_range": self.ngram_range,
            "cache_size": self.cache_size,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        params = self.__getstate__()
        return "Featurizer(" + ", ".join(f"{k}={v!r}" for k, v in params.items() if k != "cache_size") + ")"

    @property
    def version(self) -> str:
        """Content hash of the featurization code and parameters (not the cache size: output is the same)."""
        params = f"{self.n_features}|{self.n_field_features}|{self.ngram_range}"
        return hashlib.sha256((_source_digest() + params).encode()).hexdigest()[:12]

    # ---- hashing -------------------------------------------------------------------------------

    def _text_column(self, key: str) -> int:
        return murmurhash3_32(key, positive=True) % self.n_text_features

    def _field_column(self, key: str) -> int:
        return self.n_text_features + murmurhash3_32(key, positive=True) % self.n_field_features

    def _word(self, raw: str) -> _WordEntry:
        entry = self._words.get(raw)
        if entry is None:
            if len(self._words) >= self.cache_size:
                self._words.clear()
            word = fix_lookalikes(raw)
            column = self._text_column
            columns = [column("w:" + word)]
            padded = f" {word} "
            low, high = self.ngram_range
            for n in range(low, high + 1):
                columns.extend(column("g:" + padded[i : i + n]) for i in range(len(padded) - n + 1))
            columns.extend(column("c:" + cue) for cue in word_cues(word))
            entry = (word, tuple(columns), column("h:" + word))
            self._words[raw] = entry
        return entry

    def _bigram(self, left: str, right: str) -> int:
        key = (left, right)
        col = self._bigrams.get(key)
        if col is None:
            if len(self._bigrams) >= self.cache_size:
                self._bigrams.clear()
            col = self._bigrams[key] = self._text_column(f"b:{left} {right}")
        return col

    # ---- items ---------------------------------------------------------------------------------

    def _segments(self, item: Mapping[str, Any]) -> list[list[_WordEntry]]:
        """Word entries of name and, when it adds words, full_name; bigrams never cross segments."""
        raw_name = item.get("name") or ""
        raw_full = item.get("full_name") or ""
        name = split_words(raw_name)
        full = split_words(raw_full) if raw_full and raw_full != raw_name else name
        if not full or full == name:
            raw_segments = [name]
        elif not name:
            raw_segments = [full]
        elif f" {' '.join(name)} " in f" {' '.join(full)} ":
            raw_segments = [full]  # full_name contains the name: its extra words are the only addition
        else:
            raw_segments = [name, full]
        word = self._word
        return [[word(raw) for raw in segment] for segment in raw_segments if segment]

    def _field_columns(self, item: Mapping[str, Any]) -> tuple[int, ...]:
        get = item.get
        key = (get("unit"), get("kind"), get("type_hint"), get("okved_code"), get("hs_code"))
        cached = self._field_sets.get(key)
        if cached is not None:
            return cached
        if len(self._field_sets) >= self.cache_size:
            self._field_sets.clear()
        columns: list[int] = []
        for prefix, value in zip(("u:", "k:", "t:", "o:", "hs:"), key, strict=True):
            if value:
                columns.extend(self._field_value_columns(prefix, str(value)))
        cached = self._field_sets[key] = tuple(columns)
        return cached

    def _field_value_columns(self, prefix: str, value: str) -> tuple[int, ...]:
        key = (prefix, value)
        cached = self._fields.get(key)
        if cached is not None:
            return cached
        if len(self._fields) >= self.cache_size:
            self._fields.clear()
        names: list[str]
        if prefix == "o:":
            digits = _DIGITS.sub("", value)
            names = []
            if len(digits) >= 2:
                section = _okved_section(int(digits[:2]))
                names = ["od:" + digits[:2]] + (["os:" + section] if section else [])
        elif prefix == "hs:":
            digits = _DIGITS.sub("", value)
            names = ["hs:present"] + (["hc:" + digits[:2]] if len(digits) >= 2 else [])
        else:
            names = [prefix + fix_lookalikes(word) for word in split_words(value)]
        cached = self._fields[key] = tuple(self._field_column(name) for name in names)
        return cached

    # ---- matrices ------------------------------------------------------------------------------

    def transform(self, items: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Feature matrix, float32, shape (len(items), n_features)."""
        return self._build(items, with_tokens=False)[0]

    def transform_with_tokens(self, items: Sequence[Mapping[str, Any]]) -> tuple[sp.csr_matrix, TokenMatrix]:
        """The feature matrix and the per-word decomposition of its text block (for attribution)."""
        features, tokens = self._build(items, with_tokens=True)
        assert tokens is not None
        return features, tokens

    def _build(
        self, items: Sequence[Mapping[str, Any]], *, with_tokens: bool
    ) -> tuple[sp.csr_matrix, TokenMatrix | None]:
        indices: list[int] = []
        indptr = [0]
        token_indices: list[int] = []
        token_values: list[float] = []
        token_indptr = [0]
        token_items: list[int] = []
        token_words: list[str] = []
        bigram = self._bigram
        for row, item in enumerate(items):
            segments = self._segments(item)
            for position, segment in enumerate(segments):
                previous: _WordEntry | None = None
                bigrams: list[int] = []
                for entry in segment:
                    indices.extend(entry[1])
                    if previous is not None:
                        bigrams.append(bigram(previous[0], entry[0]))
                    previous = entry
                indices.extend(bigrams)
                if position == 0:
                    indices.append(segment[0][2])
                if with_tokens:
                    for i, entry in enumerate(segment):
                        columns = entry[1] + ((entry[2],) if position == 0 and i == 0 else ())
                        token_indices.extend(columns)
                        token_values.extend([1.0] * len(columns))
                        shared = bigrams[max(i - 1, 0) : i + 1]
                        token_indices.extend(shared)
                        token_values.extend([0.5] * len(shared))
                        token_indptr.append(len(token_indices))
                        token_items.append(row)
                        token_words.append(entry[0])
            indices.extend(self._field_columns(item))
            indptr.append(len(indices))

        n_items = len(indptr) - 1
        features = sp.csr_matrix(
            (
                np.ones(len(indices), dtype=np.float32),
                np.fromiter(indices, dtype=np.int32, count=len(indices)),
                np.fromiter(indptr, dtype=np.int64, count=len(indptr)),
            ),
            shape=(n_items, self.n_features),
        )
        features.sum_duplicates()
        text_norms = self._normalize_blocks(features)
        if not with_tokens:
            return features, None

        token_matrix = sp.csr_matrix(
            (
                np.asarray(token_values, dtype=np.float32),
                np.asarray(token_indices, dtype=np.int32),
                np.asarray(token_indptr),
            ),
            shape=(len(token_words), self.n_features),
        )
        item_index = np.asarray(token_items, dtype=np.int64)
        row_scale = (1.0 / text_norms[item_index]).astype(np.float32)
        token_matrix.data *= np.repeat(row_scale, np.diff(token_matrix.indptr))
        return features, TokenMatrix(token_matrix, item_index, token_words)

    def _normalize_blocks(self, features: sp.csr_matrix) -> np.ndarray:
        """L2-normalise the text and field blocks of each row in place; returns the text-block norms."""
        n_items = features.shape[0]
        rows = np.repeat(np.arange(n_items), np.diff(features.indptr))
        keys = rows * 2 + (features.indices >= self.n_text_features)
        norms = np.sqrt(
            np.bincount(keys, weights=np.square(features.data, dtype=np.float64), minlength=2 * n_items)
        )
        if features.nnz:
            features.data /= norms[keys].astype(np.float32)
        text_norms = norms[0::2]
        text_norms[text_norms == 0] = 1.0
        return text_norms

    # ---- explanation and digests ---------------------------------------------------------------

    def tokens_with_columns(self, item: Mapping[str, Any]) -> list[tuple[str, list[int]]]:
        """Each normalised word (in order, repeats kept) with the columns it contributes to.

        Columns: its unigram, character n-grams and cues, the head-word column for the first word, and the
        bigram columns it takes part in (a bigram is listed under both of its words). A column may repeat
        when two of the word's n-grams hash to it.
        """
        _, tokens = self._build([item], with_tokens=True)
        assert tokens is not None
        matrix = tokens.matrix
        return [
            (word, matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]].tolist())
            for r, word in enumerate(tokens.words)
        ]

    @staticmethod
    def digest(row: sp.spmatrix | sp.sparray) -> str:
        """16-hex-char digest of one feature row (column indices and values rounded to 1e-6)."""
        row = sp.csr_matrix(row)
        row.sum_duplicates()
        start, end = row.indptr[0], row.indptr[1]
        return Featurizer._digest_arrays(row.indices[start:end], row.data[start:end], row.shape[1])

    @staticmethod
    def _digest_arrays(indices: np.ndarray, values: np.ndarray, width: int) -> str:
        digest = hashlib.sha256(str(width).encode())
        digest.update(np.asarray(indices, dtype="<i4").tobytes())
        digest.update(np.rint(np.asarray(values, dtype=np.float64) * 1e6).astype("<i8").tobytes())
        return digest.hexdigest()[:16]

    def feature_digest(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        return self.row_digests(self.transform(items))

    def row_digests(self, features: sp.csr_matrix) -> list[str]:
        """`digest` of every row of a matrix this featurizer made (values converted once per matrix)."""
        ptr = features.indptr
        indices = np.asarray(features.indices, dtype="<i4").tobytes()
        values = np.rint(np.asarray(features.data, dtype=np.float64) * 1e6).astype("<i8").tobytes()
        width = str(self.n_features).encode()
        digests = []
        for start, end in zip(ptr[:-1].tolist(), ptr[1:].tolist(), strict=True):
            digest = hashlib.sha256(width)
            digest.update(indices[4 * start : 4 * end])
            digest.update(values[8 * start : 8 * end])
            digests.append(digest.hexdigest()[:16])
        return digests
