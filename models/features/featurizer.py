"""Hashed sparse features of nomenclature items: the one featurization for training, batch and stream.

Text is the name, plus full_name when it adds words (full_name alone when it contains the name). Text
features: word unigrams, word bigrams (within name or full_name, never across), the head word (first word),
character 3–5-grams of each space-padded word, and lexical goods/services cues
(`models.features.lexical_cues`).

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
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.utils import murmurhash3_32

from models.features import lexical_cues, text_normalization
from models.features.lexical_cues import word_cues
from models.features.text_normalization import fix_lookalikes, split_words

# The structured fields the featurizer reads, and the prefix of their hashed feature names.
FIELD_NAMES = ("unit", "kind", "type_hint", "okved_code", "hs_code")
_FIELD_PREFIXES = ("u:", "k:", "t:", "o:", "hs:")
# Feature groups, for permutation importance: the text's words (with the head word), word bigrams,
# character n-grams and lexical cues, then one group per structured field.
FEATURE_GROUPS = ("words", "bigrams", "char_ngrams", "lexical_cues", *FIELD_NAMES)

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


class Occlusions(NamedTuple):
    """What `Featurizer.occlusions` returns for a batch of items."""

    parts: list[list[str]]  # per item: its words and fields, in order
    counts: sp.csr_matrix  # per item: its feature counts (what `counts` gives)
    contributions: sp.csr_matrix  # per part, item after item: the counts it contributes
    owner: np.ndarray  # per part: the index of its item


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
            unigram, ngrams, cues = self._word_parts(word)
            entry = (word, (unigram, *ngrams, *cues), self._text_column("h:" + word))
            self._words[raw] = entry
        return entry

    def _word_parts(self, word: str) -> tuple[int, list[int], list[int]]:
        """A normalised word's unigram column, character n-gram columns and lexical-cue columns."""
        column = self._text_column
        padded = f" {word} "
        low, high = self.ngram_range
        ngrams = [
            column("g:" + padded[i : i + n]) for n in range(low, high + 1) for i in range(len(padded) - n + 1)
        ]
        return column("w:" + word), ngrams, [column("c:" + cue) for cue in word_cues(word)]

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
        for prefix, value in zip(_FIELD_PREFIXES, key, strict=True):
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
        return self.normalize_counts(self.counts(items))

    def counts(self, items: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Un-normalised feature counts (duplicates summed, indices sorted), float32."""
        return self._assemble([(self._segments(item), self._field_columns(item)) for item in items])

    def _assemble(self, rows: Sequence[tuple[list[list[_WordEntry]], tuple[int, ...]]]) -> sp.csr_matrix:
        """Count rows from (segments, field columns) pairs."""
        indices: list[int] = []
        indptr = [0]
        bigram = self._bigram
        for segments, field_columns in rows:
            for position, segment in enumerate(segments):
                previous: _WordEntry | None = None
                for entry in segment:
                    indices.extend(entry[1])
                    if previous is not None:
                        indices.append(bigram(previous[0], entry[0]))
                    previous = entry
                if position == 0:
                    indices.append(segment[0][2])
            indices.extend(field_columns)
            indptr.append(len(indices))
        counts = sp.csr_matrix(
            (
                np.ones(len(indices), dtype=np.float32),
                np.fromiter(indices, dtype=np.int32, count=len(indices)),
                np.fromiter(indptr, dtype=np.int64, count=len(indptr)),
            ),
            shape=(len(indptr) - 1, self.n_features),
        )
        counts.sum_duplicates()
        return counts

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

    # ---- occlusion and feature groups ----------------------------------------------------------

    def occlusions(self, items: Sequence[Mapping[str, Any]], max_parts: int = 12) -> Occlusions:
        """For each item, its parts and the feature counts each part contributes (`Occlusions`).

        Parts: each distinct normalised word of the name (of full_name when there is no name), in order,
        then each structured field present, as ``unit=шт``, ``okved_code=62.01`` …; at most `max_parts`.
        A word contributes, over all its occurrences, its unigram, character n-grams and cues, every
        bigram it takes part in, and the head-word feature when it is the first word; a field its columns.
        """
        return self.occlusions_of_keys([self.occlusion_key(item) for item in items], max_parts)

    def occlusions_of_keys(self, keys: Sequence[tuple[Any, ...]], max_parts: int = 12) -> Occlusions:
        """`occlusions` of the items with these `occlusion_key`s."""
        parts: list[list[str]] = []
        removed: list[list[int]] = []
        rows: list[tuple[list[list[_WordEntry]], tuple[int, ...]]] = []
        word = self._word  # a normalised word is its own cache key: normalising is idempotent
        for segment_words, field_values, name_words in keys:
            segments = [[word(w) for w in segment] for segment in segment_words]
            fields = dict(zip(FIELD_NAMES, field_values, strict=True))
            rows.append((segments, self._field_columns(fields)))
            in_name = set(name_words)
            ordered = dict.fromkeys(w for segment in segment_words for w in segment)
            item_parts: list[str] = []
            for w in [w for w in ordered if w in in_name][:max_parts]:
                item_parts.append(w)
                removed.append(self._word_contribution(segments, w))
            for name, prefix in zip(FIELD_NAMES, _FIELD_PREFIXES, strict=True):
                value = fields[name]
                if value and len(item_parts) < max_parts:
                    item_parts.append(f"{name}={value}")
                    removed.append(list(self._field_value_columns(prefix, str(value))))
            parts.append(item_parts)
        indptr = np.cumsum([0] + [len(columns) for columns in removed])
        flat = [column for columns in removed for column in columns]
        contributions = sp.csr_matrix(
            (np.ones(len(flat), dtype=np.float32), np.asarray(flat, dtype=np.int32), indptr),
            shape=(len(removed), self.n_features),
        )
        contributions.sum_duplicates()
        owner = np.repeat(np.arange(len(keys)), [len(p) for p in parts])
        return Occlusions(parts, self._assemble(rows), contributions, owner)

    def _word_contribution(self, segments: list[list[_WordEntry]], word: str) -> list[int]:
        columns: list[int] = []
        for position, segment in enumerate(segments):
            for i, entry in enumerate(segment):
                if entry[0] == word:
                    columns.extend(entry[1])
                    if position == 0 and i == 0:
                        columns.append(entry[2])
                if i and word in (entry[0], segment[i - 1][0]):
                    columns.append(self._bigram(segment[i - 1][0], entry[0]))
        return columns

    def occlusion_key(self, item: Mapping[str, Any]) -> tuple[Any, ...]:
        """What the item's features and `occlusions` depend on: equal keys, equal results (a cache key)."""
        segments = tuple(tuple(entry[0] for entry in segment) for segment in self._segments(item))
        fields = tuple(item.get(name) or None for name in FIELD_NAMES)
        return segments, fields, tuple(sorted(self._name_words(item)))

    def _name_words(self, item: Mapping[str, Any]) -> set[str]:
        source = item.get("name") or item.get("full_name") or ""
        return {self._word(raw)[0] for raw in split_words(source)}

    def group_counts(self, items: Sequence[Mapping[str, Any]]) -> dict[str, sp.csr_matrix]:
        """Un-normalised feature counts split by feature group (see FEATURE_GROUPS); they add up to the
        counts `transform` normalises, so `normalize_counts(sum(groups))` equals `transform(items)`."""
        entries: dict[str, tuple[list[int], list[int], list[int]]] = {
            g: ([], [], [0]) for g in FEATURE_GROUPS
        }

        def add(group: str, row: int, columns: Sequence[int]) -> None:
            entries[group][0].extend(columns)
            entries[group][1].extend([row] * len(columns))

        for row, item in enumerate(items):
            for position, segment in enumerate(self._segments(item)):
                for i, (word, _, head) in enumerate(segment):
                    unigram, ngrams, cues = self._word_parts(word)
                    add("words", row, [unigram, head] if position == 0 and i == 0 else [unigram])
                    add("char_ngrams", row, ngrams)
                    add("lexical_cues", row, cues)
                    if i:
                        add("bigrams", row, [self._bigram(segment[i - 1][0], word)])
            for name, prefix in zip(FIELD_NAMES, _FIELD_PREFIXES, strict=True):
                value = item.get(name)
                if value:
                    add(name, row, self._field_value_columns(prefix, str(value)))
        shape = (len(items), self.n_features)
        return {
            group: sp.csr_matrix(
                (np.ones(len(columns), dtype=np.float32), (np.asarray(rows, dtype=np.int64), columns)),
                shape=shape,
            )
            for group, (columns, rows, _) in entries.items()
        }

    def normalize_counts(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """Counts → features as `transform` makes them (text and field blocks each L2-normalised)."""
        features = sp.csr_matrix(counts, dtype=np.float32, copy=True)
        features.sum_duplicates()
        self._normalize_blocks(features)
        return features

    def block_norms(self, counts: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """L2 norms of each row's text block and field block (1 where a block is empty)."""
        squares = counts.multiply(counts).tocsc()
        text = np.sqrt(np.asarray(squares[:, : self.n_text_features].sum(axis=1), dtype=np.float64).ravel())
        field = np.sqrt(np.asarray(squares[:, self.n_text_features :].sum(axis=1), dtype=np.float64).ravel())
        text[text == 0] = 1.0
        field[field == 0] = 1.0
        return text, field

    # ---- explanation and digests ---------------------------------------------------------------

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
