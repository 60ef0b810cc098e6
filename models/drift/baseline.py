"""The drift baseline: what items looked like to the model when it was trained, frozen as bins and counts.

Per monitored feature of an item and its prediction:

* numeric — quantile bin edges computed once on the reference rows (``bins`` bins, fewer when values
  repeat; a value that holds a bin's share by itself gets its own bin), with open-ended outer bins, and
  the reference rows' count per bin;
* categorical — the reference's categories (the most frequent ``max_categories``), plus ``(none)`` for a
  missing value and ``(other)`` for anything else, with their counts.

A stream item is reduced to one bin index per feature (`Baseline.bins`): the counts of a window are then
vectors that add up across partitions and workers, and the distances in `models.drift.metrics` compare
them to the reference counts.

`nomenclature train` builds the baseline from the validation split — rows the model never trained on,
which is what live traffic is to it — with the training split's words as the vocabulary of
``unseen_token_share``. ``nomenclature drift baseline --from FILE`` rebuilds it from a user's own history.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np

from models.features.featurizer import _okved_section
from models.features.text_normalization import fix_lookalikes, normalize_words, split_words

NONE = "(none)"
OTHER = "(other)"
# The key of training's metrics that carries the baseline (JSON) to ModelRegistry.register, which stores it
# beside the artifact.
BASELINE_METRIC = "drift_baseline"
DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 30

NUMERIC_FEATURES: dict[str, str] = {
    "name_length": "characters in name",
    "word_count": "words in name",
    "digit_share": "share of digits among the name's letters and digits",
    "latin_share": "share of Latin letters among the name's letters",
    "unseen_token_share": "share of the name's words not in the training vocabulary",
    "confidence": "the prediction's confidence",
}
CATEGORICAL_FEATURES: dict[str, str] = {
    "unit": "unit of measure (normalised)",
    "kind": "kind (normalised)",
    "country": "ISO 3166-1 country",
    "okved_section": "ОКВЭД2 section of okved_code",
    "hs_chapter": "ТН ВЭД chapter (first two digits of hs_code)",
    "source": "the item's source field",
    "predicted_label": "the predicted label",
}
FEATURES: tuple[str, ...] = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)

_DIGITS = re.compile(r"\D+")
# what is not a letter, a Latin letter, a digit: a name's letters are what is left once they are removed
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_NOT_LATIN = re.compile(r"[^A-Za-z]+")


def measure(
    item: Mapping[str, Any], label: str, confidence: float, vocabulary: frozenset[str]
) -> dict[str, Any]:
    """Every feature's value for one item and its prediction (numbers, or category strings / None)."""
    return {
        **_name_values(str(item.get("name") or ""), vocabulary),
        "confidence": float(confidence),
        **_field_values(item),
        "predicted_label": label,
    }


def _name_values(name: str, vocabulary: frozenset[str]) -> dict[str, float]:
    """The features of the name alone (NAME_FEATURES)."""
    words = _name_words(name)
    letters = len(_NOT_LETTERS.sub("", name))
    latin = len(_NOT_LATIN.sub("", name))
    digits = len(_DIGITS.sub("", name))
    alnum = letters + digits
    return {
        "name_length": float(len(name)),
        "word_count": float(len(words)),
        "digit_share": digits / alnum if alnum else 0.0,
        "latin_share": latin / letters if letters else 0.0,
        "unseen_token_share": sum(w not in vocabulary for w in words) / len(words) if words else 0.0,
    }


def _field_values(item: Mapping[str, Any]) -> dict[str, str | None]:
    """The features of the item's structured fields (FIELD_FEATURES)."""
    okved = _DIGITS.sub("", str(item.get("okved_code") or ""))
    hs = _DIGITS.sub("", str(item.get("hs_code") or ""))
    return {
        "unit": _category(item.get("unit")),
        "kind": _category(item.get("kind")),
        "country": _category(item.get("country"), upper=True),
        "okved_section": _okved_section(int(okved[:2])) if len(okved) >= 2 else None,
        "hs_chapter": hs[:2] if len(hs) >= 2 else None,
        "source": _category(item.get("source")),
    }


# FEATURES is these, in this order: the name's, the confidence, the fields', the predicted label
NAME_FEATURES = ("name_length", "word_count", "digit_share", "latin_share", "unseen_token_share")
FIELD_FEATURES = ("unit", "kind", "country", "okved_section", "hs_chapter", "source")
_FIELD_KEYS = ("unit", "kind", "country", "okved_code", "hs_code", "source")  # the item fields they read
assert FEATURES == (*NAME_FEATURES, "confidence", *FIELD_FEATURES, "predicted_label")
BINS_CACHE = 65_536  # names (and, apart, field values) whose bins `Baseline.bins` keeps; cleared when full


_FIXED_WORDS: dict[str, str] = {}  # split word -> `fix_lookalikes` of it; cleared when full
_FIXED_WORDS_SIZE = 200_000


def _name_words(name: str) -> list[str]:
    """`normalize_words(name)`, with each word's look-alike fixing looked up once (names repeat words)."""
    fixed = _FIXED_WORDS
    if len(fixed) >= _FIXED_WORDS_SIZE:
        fixed.clear()
    words = split_words(name)
    for i, word in enumerate(words):
        known = fixed.get(word)
        if known is None:
            known = fixed[word] = fix_lookalikes(word)
        words[i] = known
    return words


def _category(value: Any, upper: bool = False) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split()).rstrip(".")
    text = text.upper() if upper else text.lower()
    return text or None


@dataclass(frozen=True)
class NumericReference:
    edges: tuple[float, ...]  # interior edges; bin i holds edges[i-1] <= v < edges[i], outer bins open
    counts: tuple[int, ...]  # len(edges) + 1

    def bin(self, value: float) -> int:
        return bisect.bisect_right(self.edges, value)

    def labels(self) -> list[str]:
        bounds = ["-inf", *(f"{e:g}" for e in self.edges), "inf"]
        return [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class CategoricalReference:
    categories: tuple[str, ...]  # ends with NONE and OTHER
    counts: tuple[int, ...]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {category: i for i, category in enumerate(self.categories)}

    def bin(self, value: str | None) -> int:
        return self._index.get(NONE if value is None else value, len(self.categories) - 1)  # else OTHER

    def labels(self) -> list[str]:
        return list(self.categories)

    @property
    def observed(self) -> bool:
        """Whether the reference had any value at all: a field absent from every reference row has no
        distribution to drift from, and is reported as ``no_reference`` rather than alerted on."""
        return sum(self.counts) > self.counts[self.categories.index(NONE)]


Reference = NumericReference | CategoricalReference


@dataclass(frozen=True)
class Baseline:
    model_version: str
    featurizer_version: str
    source: str  # where the reference rows came from
    rows: int
    features: dict[str, Reference]
    vocabulary: frozenset[str] = field(repr=False)
    created_at: str = ""

    @cached_property
    def version(self) -> str:
        """``bl-`` + 12 hex digits of the content (not of created_at): the same reference, the same id."""
        content = self.to_dict()
        content.pop("created_at")
        canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return "bl-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def sizes(self) -> list[int]:
        return [len(self.features[name].counts) for name in FEATURES]

    def bins(self, item: Mapping[str, Any], label: str, confidence: float) -> tuple[int, ...]:
        """One bin index per feature, in FEATURES order: each feature's `bin` of what `measure` gives, the
        name's bins and the fields' bins looked up once per distinct name and field values."""
        name = str(item.get("name") or "")
        by_name = self._name_bins
        name_bins = by_name.get(name)
        if name_bins is None:
            if len(by_name) >= BINS_CACHE:
                by_name.clear()
            values = _name_values(name, self.vocabulary)
            name_bins = by_name[name] = tuple(self.features[f].bin(values[f]) for f in NAME_FEATURES)
        get = item.get
        fields = tuple(get(key) for key in _FIELD_KEYS)
        by_fields = self._field_bins
        try:
            field_bins = by_fields.get(fields)
        except TypeError:  # a value that does not hash (not from a validated record): not kept
            fields, field_bins = None, None
        if field_bins is None:
            values = _field_values(item)
            field_bins = tuple(self.features[f].bin(values[f]) for f in FIELD_FEATURES)
            if fields is not None:
                if len(by_fields) >= BINS_CACHE:
                    by_fields.clear()
                by_fields[fields] = field_bins
        features = self.features
        return (
            *name_bins,
            features["confidence"].bin(float(confidence)),
            *field_bins,
            features["predicted_label"].bin(label),
        )

    @cached_property
    def _name_bins(self) -> dict[str, tuple[int, ...]]:
        return {}

    @cached_property
    def _field_bins(self) -> dict[tuple[Any, ...], tuple[int, ...]]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        features: dict[str, Any] = {}
        for name, ref in self.features.items():
            if isinstance(ref, NumericReference):
                features[name] = {"type": "numeric", "edges": list(ref.edges), "counts": list(ref.counts)}
            else:
                features[name] = {
                    "type": "categorical",
                    "categories": list(ref.categories),
                    "counts": list(ref.counts),
                }
        return {
            "model_version": self.model_version,
            "featurizer_version": self.featurizer_version,
            "source": self.source,
            "rows": self.rows,
            "created_at": self.created_at,
            "features": features,
            "vocabulary": sorted(self.vocabulary),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, payload: bytes | str) -> Baseline:
        data = json.loads(payload)
        features: dict[str, Reference] = {}
        for name, spec in data["features"].items():
            if spec["type"] == "numeric":
                features[name] = NumericReference(tuple(spec["edges"]), tuple(spec["counts"]))
            else:
                features[name] = CategoricalReference(tuple(spec["categories"]), tuple(spec["counts"]))
        missing = [name for name in FEATURES if name not in features]
        if missing:
            raise ValueError(f"baseline lacks features {missing}")
        return cls(
            model_version=data["model_version"],
            featurizer_version=data["featurizer_version"],
            source=data["source"],
            rows=data["rows"],
            features=features,
            vocabulary=frozenset(data["vocabulary"]),
            created_at=data.get("created_at", ""),
        )


def _edges(column: np.ndarray, bins: int) -> tuple[float, ...]:
    """Quantile edges; a value holding at least a bin's share of the reference (0 for ``latin_share`` of
    Cyrillic names) gets a bin of its own, so values above it — never seen in the reference — do not
    fall into its bin and stay visible."""
    edges = set(np.quantile(column, np.arange(1, bins) / bins).tolist())
    values, counts = np.unique(column, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if count >= len(column) / bins:
            edges.update({value, value + 1e-9 * max(1.0, abs(value))})
    return tuple(sorted(float(e) for e in edges))


def vocabulary_of(names: Iterable[str]) -> frozenset[str]:
    words: set[str] = set()
    for name in names:
        words.update(normalize_words(str(name or "")))
    return frozenset(words)


def build_baseline(
    classifier: Any,
    items: Sequence[Mapping[str, Any]],
    vocabulary: frozenset[str],
    *,
    source: str,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> Baseline:
    """The baseline of `classifier` on the reference `items` (stream-like dicts with at least ``name``)."""
    if not items:
        raise ValueError("a baseline needs at least one reference row")
    if bins < 2:
        raise ValueError("bins must be at least 2")
    predictions = classifier.predict(items, top_k=1, explain=0)
    values = [
        measure(item, p.label, p.confidence, vocabulary) for item, p in zip(items, predictions, strict=True)
    ]
    features: dict[str, Reference] = {}
    for name in NUMERIC_FEATURES:
        column = np.array([v[name] for v in values], dtype=np.float64)
        edges = _edges(column, bins)
        ref = NumericReference(edges, ())
        counts = np.bincount([ref.bin(x) for x in column], minlength=len(edges) + 1)
        features[name] = NumericReference(edges, tuple(int(c) for c in counts))
    for name in CATEGORICAL_FEATURES:
        counter = Counter(NONE if v[name] is None else v[name] for v in values)
        kept = [c for c, _ in counter.most_common() if c not in (NONE, OTHER)][:max_categories]
        categories = (*sorted(kept), NONE, OTHER)
        counts = [counter.get(c, 0) for c in categories[:-1]]
        counts.append(sum(counter.values()) - sum(counts))
        features[name] = CategoricalReference(categories, tuple(counts))
    return Baseline(
        model_version=classifier.version,
        featurizer_version=classifier.featurizer_version,
        source=source,
        rows=len(items),
        features=features,
        vocabulary=vocabulary,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
