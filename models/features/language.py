"""Russian language knowledge for the featurizer: morphology (pymorphy3) and word embeddings (navec).

Both carry to words the training data never showed. Morphology gives a word's lemma, part of speech and
grammemes, and tells whether a noun is a *verbal noun* (it names an action: "промывка" ← "промыть",
"окрашивание" ← "окрашивать"). That is derived from the dictionary, not from a list: a noun is verbal when
taking a nominalising suffix off its lemma and putting a verb ending on the stem gives a verb the dictionary
knows. Embeddings: navec's 300-dimensional Russian vectors (news, 250k words), as shipped inside the natasha
wheel, projected onto their first `EMBEDDING_DIMS` principal axes (`data/navec_pca.npy`, made by
`python -m tools.build_embedding_projection`) so that the model input stays narrow.

Nothing is downloaded: pymorphy3's dictionary is the `pymorphy3-dicts-ru` package, and the navec file is read
from the installed natasha package without importing it (natasha imports pymorphy2, which does not work on
Python ≥ 3.11; `make install` installs natasha with `--no-deps`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
from functools import cache, lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

NAVEC_FILE = "navec_news_v1_1B_250K_300d_100q.tar"
PROJECTION_FILE = Path(__file__).resolve().parent / "data" / "navec_pca.npy"
EMBEDDING_DIMS = 32
ANALYSIS_CACHE = 262_144

# (suffix of the noun's lemma, verb endings to try on what is left): "промывка" → "промыв" + "ать".
# The empty suffix is for nouns with no suffix at all ("ремонт" ← "ремонтировать").
_NOMINALISING: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ирование", ("ировать",)),
    ("ование", ("овать",)),
    ("ание", ("ать", "ять")),
    ("яние", ("ять",)),
    ("ение", ("ить", "ять", "еть")),
    ("тие", ("ть",)),
    ("ация", ("ировать", "овать")),
    ("ка", ("ать", "ить", "ять", "ывать", "ивать", "нуть", "ть")),
    ("аж", ("ировать", "ать")),
    ("а", ("ить", "ять")),
    ("", ("ировать", "ить")),
)
_MIN_STEM = 3


class Analysis(NamedTuple):
    """What morphology says about one normalised word."""

    lemma: str
    pos: str | None  # OpenCorpora part of speech: NOUN, ADJF, PRTF, INFN, …
    number: str | None
    case: str | None
    verbal_suffix: str | None  # for a verbal noun: the nominalising suffix ("" for none), else None


class MissingLanguageData(RuntimeError):
    """pymorphy3's dictionary or navec's vectors are not installed."""


def _natasha_embeddings() -> Path:
    spec = importlib.util.find_spec("natasha")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise MissingLanguageData(
            "the natasha package (which carries navec's embeddings) is not installed: "
            "run `make install`, or `pip install --no-deps natasha==1.6.0`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emb" / NAVEC_FILE
    if not path.is_file():
        raise MissingLanguageData(f"{path} is missing: reinstall natasha (`pip install --no-deps natasha`)")
    return path


class Language:
    """Morphology and embeddings, loaded once per process (see `language()`)."""

    def __init__(self) -> None:
        try:
            import pymorphy3
            from navec import Navec
        except ImportError as exc:  # pragma: no cover - both are dependencies
            raise MissingLanguageData(f"{exc}: run `make install`") from exc
        logging.getLogger("pymorphy3").setLevel(logging.WARNING)  # it logs each dictionary load at INFO
        self.morph = pymorphy3.MorphAnalyzer()
        self.navec_path = _natasha_embeddings()
        self.navec = Navec.load(str(self.navec_path))
        self.projection = np.load(PROJECTION_FILE, allow_pickle=False)  # (300, EMBEDDING_DIMS) float32
        self.analyse = lru_cache(maxsize=ANALYSIS_CACHE)(self._analyse)

    @property
    def identity(self) -> str:
        """What the features depend on besides code: the dictionary's version and the vectors' bytes."""
        digest = hashlib.sha256(importlib.metadata.version("pymorphy3-dicts-ru").encode())
        digest.update(importlib.metadata.version("pymorphy3").encode())
        digest.update(_file_digest(self.navec_path).encode())
        digest.update(PROJECTION_FILE.read_bytes())
        return digest.hexdigest()

    def _analyse(self, word: str) -> Analysis:
        """(Cached as `analyse`.)"""
        parse = self.morph.parse(word)[0]
        tag = parse.tag
        lemma = str(parse.normal_form)
        verbal = self.verbal_suffix(lemma) if tag.POS == "NOUN" else None
        # plain strs: pymorphy's grammemes are a str subclass, which the garbage collector tracks
        return Analysis(lemma, _plain(tag.POS), _plain(tag.number), _plain(tag.case), verbal)

    def verbal_suffix(self, lemma: str) -> str | None:
        """The nominalising suffix of a verbal noun's lemma ("" when it has none), None for other nouns."""
        for suffix, endings in _NOMINALISING:
            if not lemma.endswith(suffix):
                continue
            stem = lemma[: len(lemma) - len(suffix)]
            if len(stem) >= _MIN_STEM and any(self._is_verb(stem + ending) for ending in endings):
                return suffix
        return None

    def _is_verb(self, word: str) -> bool:
        morph = self.morph
        return morph.word_is_known(word) and any(
            p.tag.POS == "INFN" and p.normal_form == word for p in morph.parse(word)
        )

    def vector(self, word: str, lemma: str) -> np.ndarray | None:
        """The word's projected, unit-length embedding (of its lemma when navec has it, else of the form)."""
        navec = self.navec
        for candidate in (lemma, word):
            index = navec.vocab.get(candidate)
            if index is not None:
                projected = navec.pq[index] @ self.projection
                norm = float(np.linalg.norm(projected))
                return (projected / norm).astype(np.float32) if norm > 0 else None
        return None


def _plain(grammeme: str | None) -> str | None:
    return None if grammeme is None else str(grammeme)


@cache
def language() -> Language:
    return Language()


@cache
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
