"""Hashed sparse features of nomenclature items: the one featurization for training, batch and stream.

Text is the name, plus full_name when it adds words (full_name alone when it contains the name). Text
features: word unigrams, word bigrams (within name or full_name, never across), the head word (first word),
character 3–5-grams of each space-padded word, and lexical goods/services cues
(`models.features.lexical_cues`). With `morphology` (`models.features.language`): each word's lemma, and for
the head noun of each part of the name (the first noun of each comma/«и»-separated part) its number, case,
lemma and whether it is a verbal noun, the first part's apart from the others.

The name's *head word* is the first part's head noun, else its first word: in Russian nomenclature it says
what the item is ("Монтаж … багета шириной до 100 мм" is a монтаж, whatever follows).

Column layout: the first ``n_features - n_field_features`` columns hold the hashed text features; the next
``n_field_features`` columns the structured fields (unit, kind, type_hint tokens; OKVED division and section;
HS code presence and chapter). With `morphology`, a block of `HEAD_FEATURES` hashed columns follows for the
head word alone (word, lemma, part of speech, the lemma's character n-grams, a noun's morphology), so that
its weight does not fade as a long name adds words. With `embeddings`, two dense blocks of `EMBEDDING_DIMS`
columns come last: the head word's navec vector and the sum of every word's vector, whose direction is the
mean's. Sparse values are counts; each block is L2-normalised on its own, so an item's text values do not
depend on how many structured fields it carries, and the field block can stay inert until the model is
trained on data that has fields. Every feature is a sum over words and fields, so leaving a part out
(occlusion) is a subtraction before the normalisation.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.utils import murmurhash3_32

from models.features import language, lexical_cues, text_normalization
from models.features.language import EMBEDDING_DIMS, Language
from models.features.lexical_cues import word_cues
from models.features.text_normalization import fix_lookalikes, split_words

HEAD_FEATURES = 256  # columns of the head-word block
SEGMENT_CACHE = 4096  # recent items' segments (a micro-batch is featurized, then explained)
TEXT_CACHE = 16_384  # names and full names seen lately, placed (a name comes with many full names); ≈ 42 MiB

# The structured fields the featurizer reads, and the prefix of their hashed feature names.
FIELD_NAMES = ("unit", "kind", "type_hint", "okved_code", "hs_code")
_FIELD_PREFIXES = ("u:", "k:", "t:", "o:", "hs:")
# Feature groups, for permutation importance: the text's words (with the head word), word bigrams,
# character n-grams, lexical cues, lemmas, the head nouns' morphology and the embeddings, then one group
# per structured field.
FEATURE_GROUPS = (
    "words", "bigrams", "char_ngrams", "lexical_cues", "lemmas", "morphology", "head_word", "embeddings",
    *FIELD_NAMES,
)  # fmt: skip

# Where a word stands: no role, the head noun of the name's first part, the head noun of a later part.
PLAIN, FIRST_HEAD, LATER_HEAD = 0, 1, 2
# Parts of a name, each with its own head noun: "Шпатлевка, шлифовка фанеры", "Доставка и сборка".
_PARTS = re.compile(r"[,;]|\s+и\s+", re.IGNORECASE)


class Word(NamedTuple):
    """A cached word: everything the featurizer derives from it alone."""

    word: str  # normalised
    columns: tuple[int, ...]  # unigram, character n-grams, cues, lemma
    head_column: int  # the head-word (first word) feature
    noun: bool
    head_noun_columns: tuple[tuple[int, ...], tuple[int, ...]]  # as the first part's / a later part's head
    head_block: tuple[int, ...]  # its columns in the head block, where it is the name's head word
    vector: np.ndarray | None  # unit-length projected embedding


# A word of a segment and its role (PLAIN, FIRST_HEAD or LATER_HEAD).
_Placed = tuple[Word, int]

_DIGITS = re.compile(r"\D+")

# OKVED2 section letter for each two-digit division.
_OKVED_SECTIONS: tuple[tuple[int, int, str], ...] = (
    (1, 3, "A"), (5, 9, "B"), (10, 33, "C"), (35, 35, "D"), (36, 39, "E"), (41, 43, "F"), (45, 47, "G"),
    (49, 53, "H"), (55, 56, "I"), (58, 63, "J"), (64, 66, "K"), (68, 68, "L"), (69, 75, "M"), (77, 82, "N"),
    (84, 84, "O"), (85, 85, "P"), (86, 88, "Q"), (90, 93, "R"), (94, 96, "S"), (97, 98, "T"), (99, 99, "U"),
)  # fmt: skip


@cache
def _source_digest(with_language: bool) -> str:
    """Hash of every module (and, with language knowledge, every data file) whose content decides the
    features."""
    digest = hashlib.sha256()
    modules = [__file__, text_normalization.__file__, lexical_cues.__file__]
    if with_language:
        modules.append(language.__file__)
    for module_file in modules:
        digest.update(Path(module_file).read_bytes())
    if with_language:
        digest.update(language.language().identity.encode())
    return digest.hexdigest()


def _okved_section(division: int) -> str | None:
    for low, high, section in _OKVED_SECTIONS:
        if low <= division <= high:
            return section
    return None


class _Text(NamedTuple):
    """What the featurizer derives from one name or full_name (cached per text)."""

    words: tuple[str, ...]  # the raw words of its parts, in order
    placed: tuple[_Placed, ...]  # its words with their roles, as a segment
    bigrams: tuple[int, ...]  # the column of each pair of neighbouring words in `placed`
    normalised: frozenset[str]  # its normalised words
    # per distinct word, in order: the word, its occurrences and its share of the extras as a segment
    # (`_segment_contributions`)
    contributions: dict[str, tuple[Word, int, tuple[int, ...]]]


class _Analysed(NamedTuple):
    """What the featurizer derives from an item's text (cached per name and full_name)."""

    segments: list[tuple[_Placed, ...]]
    bigrams: list[tuple[int, ...]]  # per segment: the column of each pair of neighbouring words
    name_words: frozenset[str]  # the name's normalised words (of full_name when there is no name)
    texts: list[_Text]  # one per segment


def _joined(hashed: sp.csr_matrix, dense: np.ndarray) -> sp.csr_matrix:
    """The hashed and dense blocks side by side, as one float32 CSR matrix."""
    if not dense.shape[1]:
        return hashed
    return sp.hstack([hashed, sp.csr_matrix(dense)], format="csr", dtype=np.float32)


class Composition(NamedTuple):
    """A batch's counts and how their hashed blocks are made of its words (`Featurizer.composed`).

    The hashed counts of an item are its words' own columns (`Word.columns`) once per occurrence, its head
    word's head block, and `extras`. A linear first layer can so take each word's share once and reuse it
    (`models.classifier`): a word's columns are most of an item's columns.
    """

    hashed: sp.csr_matrix  # (items, n_sparse): the hashed blocks of `counts`
    dense: np.ndarray  # (items, n_dense) float32: the embedding blocks of `counts`
    words: list[Word]  # the batch's distinct words
    # (items, len(words)): a 1 per occurrence of a word in the item's text, in the item's word order and
    # not summed, so that a product with it adds an item's words in the item's own order, whatever batch
    occurrences: sp.csr_matrix
    heads: list[Word | None]  # per item: its head word, whose head blocks it carries (None: no words)
    extras: sp.csr_matrix  # (items, n_sparse): head-noun roles, bigrams, the head-word feature, fields

    @property
    def counts(self) -> sp.csr_matrix:
        """The items' feature counts (what `Featurizer.counts` gives)."""
        return _joined(self.hashed, self.dense)


class Occlusions(NamedTuple):
    """What `Featurizer.occlusions` returns for a batch of items."""

    parts: list[list[str]]  # per item: its words and fields, in order
    counts: sp.csr_matrix | None  # per item: its feature counts (what `counts` gives), when asked for
    hashed: sp.csr_matrix  # per part, item after item: the hashed counts it contributes
    vectors: np.ndarray  # per part: what it contributes to the embedding blocks
    owner: np.ndarray  # per part: the index of its item
    # A part's hashed contribution is its word's own columns `part_occurrences` times, the word's head
    # block where `part_heads`, and `part_extras` (a field part: its columns).
    part_words: list[Word | None]
    part_occurrences: np.ndarray
    part_heads: np.ndarray
    part_extras: sp.csr_matrix

    @property
    def contributions(self) -> sp.csr_matrix:
        """Per part, item after item: the counts it contributes (`hashed` and `vectors` side by side)."""
        return _joined(self.hashed, self.vectors)


class Featurizer:
    def __init__(
        self,
        n_features: int = 4096,
        n_field_features: int = 256,
        ngram_range: tuple[int, int] = (3, 5),
        cache_size: int = 200_000,
        morphology: bool = True,
        embeddings: bool = True,
    ) -> None:
        if not 0 < n_field_features < n_features:
            raise ValueError("n_field_features must be positive and smaller than n_features")
        self.n_features = n_features  # hashed columns; the matrix is `width` wide
        self.n_field_features = n_field_features
        self.n_text_features = n_features - n_field_features
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.cache_size = cache_size
        self.morphology = bool(morphology)
        self.embeddings = bool(embeddings)
        self.n_head_features = HEAD_FEATURES if self.morphology else 0
        self.n_sparse = n_features + self.n_head_features  # the hashed blocks
        self.n_dense = 2 * EMBEDDING_DIMS if self.embeddings else 0
        self.width = self.n_sparse + self.n_dense
        # First column of each block: text, fields, head word (with morphology), head-word embedding and
        # summed embeddings (with embeddings).
        starts = [0, self.n_text_features]
        if self.n_head_features:
            starts.append(n_features)
        if self.embeddings:
            starts += [self.n_sparse, self.n_sparse + EMBEDDING_DIMS]
        self.block_starts = np.asarray(starts, dtype=np.int64)
        self._reset_caches()

    def _reset_caches(self) -> None:
        # Plain dicts cleared when full: bounded, and cheaper per lookup than an LRU on the hot path.
        self._words: dict[str, Word] = {}
        self._bigrams: dict[tuple[str, str], int] = {}
        self._fields: dict[tuple[str, str], tuple[int, ...]] = {}
        self._field_sets: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self._texts: dict[str, _Text] = {}
        # (name, full_name) -> `_Analysed`
        self._segment_sets: dict[tuple[str, str], _Analysed] = {}

    def forget_items(self) -> None:
        """Empty the caches of whole names and items (not of words): the next items are featurized as
        new ones."""
        self._texts.clear()
        self._segment_sets.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "n_field_features": self.n_field_features,
            "ngram_range": self.ngram_range,
            "cache_size": self.cache_size,
            "morphology": self.morphology,
            "embeddings": self.embeddings,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # featurizers pickled before language knowledge existed had neither
        self.__init__(**{"morphology": False, "embeddings": False, **state})  # type: ignore[misc]

    def params(self) -> dict[str, Any]:
        """The constructor's arguments that decide the output (JSON-ready)."""
        state = self.__getstate__()
        state.pop("cache_size")
        state["ngram_range"] = list(self.ngram_range)
        return state

    def __repr__(self) -> str:
        return "Featurizer(" + ", ".join(f"{k}={v!r}" for k, v in self.params().items()) + ")"

    @property
    def version(self) -> str:
        """Content hash of the featurization code, data and parameters (not the cache size: output is the
        same)."""
        params = f"{self.n_features}|{self.n_field_features}|{self.ngram_range}"
        if self.morphology or self.embeddings:
            params += f"|morphology={self.morphology}|embeddings={self.embeddings}|{EMBEDDING_DIMS}"
        digest = _source_digest(self.morphology or self.embeddings)
        return hashlib.sha256((digest + params).encode()).hexdigest()[:12]

    @property
    def _language(self) -> Language:
        return language.language()

    def block_of(self, columns: np.ndarray) -> np.ndarray:
        """The block of each column: its index in `block_starts` (text, fields, then what is enabled of the
        head word, the head-word embedding and the summed embeddings)."""
        return np.searchsorted(self.block_starts, columns, side="right") - 1

    # ---- hashing -------------------------------------------------------------------------------

    def _text_column(self, key: str) -> int:
        return murmurhash3_32(key, positive=True) % self.n_text_features

    def _field_column(self, key: str) -> int:
        return self.n_text_features + murmurhash3_32(key, positive=True) % self.n_field_features

    def _head_column(self, key: str) -> int:
        return self.n_features + murmurhash3_32(key, positive=True) % self.n_head_features

    def _word(self, raw: str) -> Word:
        entry = self._words.get(raw)
        if entry is None:
            if len(self._words) >= self.cache_size:
                self._words.clear()
            entry = self._words[raw] = self._analyse_word(fix_lookalikes(raw))
        return entry

    def _analyse_word(self, word: str) -> Word:
        unigram, ngrams, cues, lemmas = self._word_parts(word)
        noun, first, later, head = False, (), (), ()
        vector = None
        if self.morphology or self.embeddings:
            analysis = self._language.analyse(word)
            if self.morphology:
                keys: tuple[str, ...] = ()
                if analysis.pos == "NOUN":
                    noun = True
                    verbal = analysis.verbal_suffix
                    keys = (
                        "noun", f"number:{analysis.number}", f"case:{analysis.case}",
                        f"lemma:{analysis.lemma}", f"verbal:{verbal is not None}", f"suffix:{verbal}",
                    )  # fmt: skip
                    first = tuple(self._text_column("n1:" + key) for key in keys)
                    later = tuple(self._text_column("n2:" + key) for key in keys)
                head = self._head_block(word, analysis.lemma, analysis.pos, keys)
            if self.embeddings:
                vector = self._language.vector(word, analysis.lemma)
        columns = (unigram, *ngrams, *cues, *lemmas)
        return Word(word, columns, self._text_column("h:" + word), noun, (first, later), head, vector)

    def _head_block(
        self, word: str, lemma: str, pos: str | None, noun_keys: tuple[str, ...]
    ) -> tuple[int, ...]:
        """A head word's features in the head block: the word, its lemma, part of speech, character
        n-grams of the lemma and, for a noun, its morphology."""
        padded = f" {lemma} "
        low, high = self.ngram_range
        keys = [
            "w:" + word, "l:" + lemma, f"pos:{pos}", *noun_keys,
            *("g:" + padded[i : i + n] for n in range(low, high + 1) for i in range(len(padded) - n + 1)),
        ]  # fmt: skip
        return tuple(self._head_column(key) for key in keys)

    def _word_parts(self, word: str) -> tuple[int, list[int], list[int], list[int]]:
        """A normalised word's unigram column, character n-gram, lexical-cue and lemma columns."""
        column = self._text_column
        padded = f" {word} "
        low, high = self.ngram_range
        ngrams = [
            column("g:" + padded[i : i + n]) for n in range(low, high + 1) for i in range(len(padded) - n + 1)
        ]
        cues = [column("c:" + cue) for cue in word_cues(word)]
        lemmas = [column("l:" + self._language.analyse(word).lemma)] if self.morphology else []
        return column("w:" + word), ngrams, cues, lemmas

    def _bigram(self, left: str, right: str) -> int:
        key = (left, right)
        col = self._bigrams.get(key)
        if col is None:
            if len(self._bigrams) >= self.cache_size:
                self._bigrams.clear()
            col = self._bigrams[key] = self._text_column(f"b:{left} {right}")
        return col

    # ---- items ---------------------------------------------------------------------------------

    def _segments(self, item: Mapping[str, Any]) -> list[tuple[_Placed, ...]]:
        """Words of name and, when it adds words, full_name, with their roles; bigrams never cross
        segments."""
        return self._analysed(item)[0]

    def _analysed(self, item: Mapping[str, Any]) -> _Analysed:
        """The item's segments, their bigrams' columns and its name's normalised words: the name and, when
        it adds words, full_name, each a segment (bigrams never cross segments)."""
        raw_name = item.get("name") or ""
        raw_full = item.get("full_name") or ""
        key = (raw_name, raw_full)
        cached = self._segment_sets.get(key)
        if cached is not None:  # an item is featurized, then explained
            return cached
        if len(self._segment_sets) >= SEGMENT_CACHE:
            self._segment_sets.clear()
        name = self._text(raw_name)
        full = self._text(raw_full) if raw_full and raw_full != raw_name else name
        if not full.words or full.words == name.words:
            texts = [name]
        elif not name.words:
            texts = [full]
        elif f" {' '.join(name.words)} " in f" {' '.join(full.words)} ":
            texts = [full]  # full_name contains the name: its extra words are the only addition
        else:
            texts = [name, full]
        texts = [text for text in texts if text.placed]
        normalised = (name if raw_name else full).normalised
        cached = self._segment_sets[key] = _Analysed(
            [text.placed for text in texts], [text.bigrams for text in texts], normalised, texts
        )
        return cached

    def _text(self, raw: str) -> _Text:
        cached = self._texts.get(raw)
        if cached is not None:
            return cached
        if len(self._texts) >= TEXT_CACHE:
            self._texts.clear()
        parts = _split_parts(raw)
        placed = self._place(parts)
        bigram = self._bigram
        bigrams = tuple(bigram(placed[i - 1][0].word, placed[i][0].word) for i in range(1, len(placed)))
        normalised = frozenset(self._word(word).word for word in split_words(raw))
        contributions = _segment_contributions(placed, bigrams)
        cached = self._texts[raw] = _Text(tuple(_words_of(parts)), placed, bigrams, normalised, contributions)
        return cached

    def _place(self, parts: list[list[str]]) -> tuple[_Placed, ...]:
        """The words of a segment's parts, each with its role (the first noun of each part heads it)."""
        word = self._word
        placed: list[_Placed] = []
        for number, part in enumerate(parts):
            head_role = FIRST_HEAD if number == 0 else LATER_HEAD
            for raw in part:
                entry = word(raw)
                if head_role and entry.noun:
                    placed.append((entry, head_role))
                    head_role = PLAIN
                else:
                    placed.append((entry, PLAIN))
        return tuple(placed)

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
        """Feature matrix, float32, shape (len(items), width)."""
        return self.normalize_counts(self.counts(items))

    def counts(self, items: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
        """Un-normalised feature counts (duplicates summed, indices sorted), float32; the embedding blocks
        hold the head word's vector and the sum of the words' vectors."""
        return self.composed(items).counts

    def composed(self, items: Sequence[Mapping[str, Any]]) -> Composition:
        """The items' counts and how they are made of the items' words (`Composition`)."""
        return self._assemble([(self._analysed(item), self._field_columns(item)) for item in items])

    def _assemble(self, rows: Sequence[tuple[_Analysed, tuple[int, ...]]]) -> Composition:
        """Count rows, and their composition, from (analysed text, field columns) pairs."""
        indices: list[int] = []
        indptr = [0]
        extras: list[int] = []
        extras_ptr = [0]
        slot_of: dict[str, int] = {}
        words: list[Word] = []
        slots: list[int] = []
        slots_ptr = [0]
        heads: list[Word | None] = []
        for (segments, bigrams, _, _), field_columns in rows:
            row_extras: list[int] = []
            for position, segment in enumerate(segments):
                for entry, role in segment:
                    indices.extend(entry.columns)
                    slot = slot_of.get(entry.word)
                    if slot is None:
                        slot = slot_of[entry.word] = len(words)
                        words.append(entry)
                    slots.append(slot)
                    if role:
                        row_extras.extend(entry.head_noun_columns[role - 1])
                row_extras.extend(bigrams[position])
                if position == 0:
                    row_extras.append(segment[0][0].head_column)
            head = _head_word(segments)
            if head is not None and self.n_head_features:
                indices.extend(head.head_block)
            heads.append(head)
            row_extras.extend(field_columns)
            indices.extend(row_extras)
            extras.extend(row_extras)
            indptr.append(len(indices))
            extras_ptr.append(len(extras))
            slots_ptr.append(len(slots))
        counts = self._ones(indices, indptr, self.n_sparse)
        counts.sum_duplicates()
        extra_counts = self._ones(extras, extras_ptr, self.n_sparse)
        extra_counts.sum_duplicates()
        occurrences = self._ones(slots, slots_ptr, len(words))
        dense = self._vectors_of(words, occurrences, heads)
        return Composition(counts, dense, words, occurrences, heads, extra_counts)

    def _vectors_of(
        self, words: list[Word], occurrences: sp.csr_matrix, heads: list[Word | None]
    ) -> np.ndarray:
        """The embedding blocks: the head word's vector and the sum of the words' vectors, added in each
        item's word order (a product with `occurrences`, row by row)."""
        dense = np.zeros((occurrences.shape[0], self.n_dense), dtype=np.float32)
        if not self.n_dense or not words:
            return dense
        dims = EMBEDDING_DIMS
        vectors = np.zeros((len(words), dims), dtype=np.float32)
        for i, word in enumerate(words):
            if word.vector is not None:
                vectors[i] = word.vector
        dense[:, dims:] = occurrences @ vectors
        for row, head in enumerate(heads):
            if head is not None and head.vector is not None:
                dense[row, :dims] = head.vector
        return dense

    @staticmethod
    def _ones(indices: list[int], indptr: list[int], width: int) -> sp.csr_matrix:
        """A CSR matrix with a 1 at each of `indices` (duplicates neither summed nor sorted)."""
        return sp.csr_matrix(
            (
                np.ones(len(indices), dtype=np.float32),
                np.fromiter(indices, dtype=np.int32, count=len(indices)),
                np.fromiter(indptr, dtype=np.int64, count=len(indptr)),
            ),
            shape=(len(indptr) - 1, width),
        )

    def _add_vectors(self, out: np.ndarray, segments: Sequence[Sequence[_Placed]]) -> None:
        """Add the embedding blocks' values of `segments` to `out`."""
        dims = EMBEDDING_DIMS
        head = _head_word(segments)
        if head is not None and head.vector is not None:
            out[:dims] += head.vector
        for segment in segments:
            for entry, _ in segment:
                if entry.vector is not None:
                    out[dims:] += entry.vector

    def _normalize_blocks(self, features: sp.csr_matrix) -> None:
        """L2-normalise each block of each row in place."""
        n_items, n_blocks = features.shape[0], len(self.block_starts)
        rows = np.repeat(np.arange(n_items), np.diff(features.indptr))
        keys = rows * n_blocks + self.block_of(features.indices)
        norms = np.sqrt(
            np.bincount(
                keys, weights=np.square(features.data, dtype=np.float64), minlength=n_blocks * n_items
            )
        )
        if features.nnz:
            features.data /= norms[keys].astype(np.float32)

    # ---- occlusion and feature groups ----------------------------------------------------------

    def occlusions(
        self, items: Sequence[Mapping[str, Any]], max_parts: int = 12, with_counts: bool = True
    ) -> Occlusions:
        """For each item, its parts and the feature counts each part contributes (`Occlusions`), and the
        items' `counts` unless not `with_counts`.

        Parts: each distinct normalised word of the name (of full_name when there is no name), in order,
        then each structured field present, as ``unit=шт``, ``okved_code=62.01`` …; at most `max_parts`.
        A word contributes, over all its occurrences, its unigram, character n-grams, cues and lemma, its
        head-noun features where it heads a part, every bigram it takes part in, the head-word feature
        when it is the first word, its vector to the summed embeddings and, when it is the embedding head,
        to the head block; a field its columns.
        """
        parts: list[list[str]] = []
        removed: list[list[int]] = []
        extras: list[list[int] | tuple[int, ...]] = []
        part_words: list[Word | None] = []
        part_occurrences: list[int] = []
        part_heads: list[bool] = []
        removed_vectors: list[tuple[int, np.ndarray, int, bool]] = []  # (part, vector, occurrences, is head)
        rows: list[tuple[_Analysed, tuple[int, ...]]] = []
        head_block = bool(self.n_head_features)
        for item in items:
            analysed = self._analysed(item)
            segments, _, in_name, texts = analysed
            fields = {name: item.get(name) or None for name in FIELD_NAMES}
            if with_counts:
                rows.append((analysed, self._field_columns(fields)))
            item_parts: list[str] = []
            head = _head_word(segments)
            words = _word_contributions(texts)
            for w in [w for w in words if w in in_name][:max_parts]:
                entry, count, own_extras = words[w]
                is_head = head is not None and head.word == w
                columns = list(entry.columns) * count + own_extras
                if is_head and head_block:
                    columns.extend(entry.head_block)
                item_parts.append(w)
                removed.append(columns)
                extras.append(own_extras)
                part_words.append(entry)
                part_occurrences.append(count)
                part_heads.append(is_head and head_block)
                if entry.vector is not None:
                    removed_vectors.append((len(removed) - 1, entry.vector, count, is_head))
            for name, prefix in zip(FIELD_NAMES, _FIELD_PREFIXES, strict=True):
                value = fields[name]
                if value and len(item_parts) < max_parts:
                    item_parts.append(f"{name}={value}")
                    field_columns = self._field_value_columns(prefix, str(value))
                    removed.append(list(field_columns))
                    extras.append(field_columns)
                    part_words.append(None)
                    part_occurrences.append(0)
                    part_heads.append(False)
            parts.append(item_parts)
        contributions = self._ones_of(removed)
        contributions.sum_duplicates()
        part_extras = self._ones_of(extras)
        part_extras.sum_duplicates()
        dense = np.zeros((len(removed), self.n_dense), dtype=np.float32)
        if self.n_dense:
            dims = EMBEDDING_DIMS
            for part, vector, count, is_head in removed_vectors:
                dense[part, dims:] = vector * float(count) if count != 1 else vector
                if is_head:
                    dense[part, :dims] = vector
        owner = np.repeat(np.arange(len(items)), [len(p) for p in parts])
        return Occlusions(
            parts,
            self._assemble(rows).counts if with_counts else None,
            contributions,
            dense,
            owner,
            part_words,
            np.asarray(part_occurrences, dtype=np.float32),
            np.asarray(part_heads, dtype=bool),
            part_extras,
        )

    def _ones_of(self, rows: Sequence[Sequence[int]]) -> sp.csr_matrix:
        indptr = np.cumsum([0] + [len(columns) for columns in rows]).tolist()
        return self._ones(list(itertools.chain.from_iterable(rows)), indptr, self.n_sparse)

    @staticmethod
    def occlusion_key(item: Mapping[str, Any]) -> tuple[Any, ...]:
        """The fields an item's features and `occlusions` are made of: equal keys, equal results (a cache
        key; items written differently that normalise alike get equal results under different keys)."""
        get = item.get
        return (
            get("name") or "", get("full_name") or "",
            get("unit"), get("kind"), get("type_hint"), get("okved_code"), get("hs_code"),
        )  # fmt: skip

    def group_counts(self, items: Sequence[Mapping[str, Any]]) -> dict[str, sp.csr_matrix]:
        """Un-normalised feature counts split by feature group (see FEATURE_GROUPS); they add up to the
        counts `transform` normalises, so `normalize_counts(sum(groups))` equals `transform(items)`."""
        entries: dict[str, tuple[list[int], list[int]]] = {g: ([], []) for g in FEATURE_GROUPS}

        def add(group: str, row: int, columns: Sequence[int]) -> None:
            entries[group][0].extend(columns)
            entries[group][1].extend([row] * len(columns))

        dense = np.zeros((len(items), self.n_dense), dtype=np.float32) if self.n_dense else None
        for row, item in enumerate(items):
            segments = self._segments(item)
            for position, segment in enumerate(segments):
                for i, (entry, role) in enumerate(segment):
                    unigram, ngrams, cues, lemmas = self._word_parts(entry.word)
                    add("words", row, [unigram, entry.head_column] if position == 0 and i == 0 else [unigram])
                    add("char_ngrams", row, ngrams)
                    add("lexical_cues", row, cues)
                    add("lemmas", row, lemmas)
                    if role:
                        add("morphology", row, entry.head_noun_columns[role - 1])
                    if i:
                        add("bigrams", row, [self._bigram(segment[i - 1][0].word, entry.word)])
            if self.n_head_features and (head := _head_word(segments)) is not None:
                add("head_word", row, head.head_block)
            if dense is not None:
                self._add_vectors(dense[row], segments)
            for name, prefix in zip(FIELD_NAMES, _FIELD_PREFIXES, strict=True):
                value = item.get(name)
                if value:
                    add(name, row, self._field_value_columns(prefix, str(value)))
        shape = (len(items), self.width)
        groups = {
            group: sp.csr_matrix(
                (np.ones(len(columns), dtype=np.float32), (np.asarray(rows, dtype=np.int64), columns)),
                shape=shape,
            )
            for group, (columns, rows) in entries.items()
        }
        if dense is not None:
            empty = sp.csr_matrix((len(items), self.n_sparse), dtype=np.float32)
            groups["embeddings"] = _joined(empty, dense)
        return groups

    def normalize_counts(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """Counts → features as `transform` makes them (each block L2-normalised)."""
        features = sp.csr_matrix(counts, dtype=np.float32, copy=True)
        features.sum_duplicates()
        features.eliminate_zeros()
        self._normalize_blocks(features)
        return features

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
        width = str(self.width).encode()
        digests = []
        for start, end in zip(ptr[:-1].tolist(), ptr[1:].tolist(), strict=True):
            digest = hashlib.sha256(width)
            digest.update(indices[4 * start : 4 * end])
            digest.update(values[8 * start : 8 * end])
            digests.append(digest.hexdigest()[:16])
        return digests


def _segment_contributions(
    placed: Sequence[_Placed], bigrams: Sequence[int]
) -> dict[str, tuple[Word, int, tuple[int, ...]]]:
    """Per distinct word of a segment, in order: the word, how often it occurs, and what leaving it out
    removes from the hashed columns besides its own columns and head block: its head-noun roles and every
    bigram it takes part in."""
    words: dict[str, tuple[Word, int, list[int]]] = {}
    previous: Word | None = None
    for i, (entry, role) in enumerate(placed):
        known = words.get(entry.word)
        own = [] if known is None else known[2]
        words[entry.word] = (entry, 1 if known is None else known[1] + 1, own)
        if role:
            own.extend(entry.head_noun_columns[role - 1])
        if previous is not None:
            column = bigrams[i - 1]
            own.append(column)
            if previous.word != entry.word:
                words[previous.word][2].append(column)
        previous = entry
    return {word: (entry, count, tuple(own)) for word, (entry, count, own) in words.items()}


def _word_contributions(texts: Sequence[_Text]) -> dict[str, tuple[Word, int, list[int]]]:
    """An item's `_segment_contributions` over its segments, and the head-word feature of its first word
    (the order of a word's extras does not matter: they are counted)."""
    words: dict[str, tuple[Word, int, list[int]]] = {}
    for text in texts:
        for word, (entry, count, own) in text.contributions.items():
            known = words.get(word)
            if known is None:
                words[word] = (entry, count, list(own))
            else:
                known[2].extend(own)
                words[word] = (entry, known[1] + count, known[2])
    if texts:
        first = texts[0].placed[0][0]
        words[first.word][2].append(first.head_column)
    return words


def _split_parts(text: str) -> list[list[str]]:
    """The raw words of each comma/«и»-separated part of a text."""
    return [words for part in _PARTS.split(text) if (words := split_words(part))]


def _words_of(parts: list[list[str]]) -> list[str]:
    return [word for part in parts for word in part]


def _head_word(segments: Sequence[Sequence[_Placed]]) -> Word | None:
    """The name's head word (the head block's and the head embedding's): the first part's head noun,
    else the first word."""
    if not segments:
        return None
    for entry, role in segments[0]:
        if role == FIRST_HEAD:
            return entry
    return segments[0][0][0]
