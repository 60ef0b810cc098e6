"""Text normalisation for nomenclature names: case, ё, punctuation, Latin look-alikes."""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[\W_]+")

# Lower-case Latin letters that are drawn like a Cyrillic letter (upper-case B, H, M, T look like В, Н, М, Т,
# and names are lower-cased before this mapping is applied).
_LOOKALIKES = str.maketrans("aceopxykmtbh", "асеорхукмтвн")
_LATIN = frozenset("abcdefghijklmnopqrstuvwxyz")


def split_words(text: str) -> list[str]:
    """Lower-case, ё→е, every run of punctuation/whitespace to one separator; digits are kept.

    Look-alike letters are not fixed here: callers that cache per word apply `fix_lookalikes` once per
    distinct word.
    """
    return _NON_WORD.sub(" ", text.lower().replace("ё", "е")).split()


def fix_lookalikes(word: str) -> str:
    """Map Latin look-alike letters to Cyrillic inside a word that is mostly Cyrillic ('pемонт' → 'ремонт').

    Words that are mostly Latin ('hp', 'cf226x') are left alone.
    """
    if word.isascii():
        return word
    latin = sum(ch in _LATIN for ch in word)
    if not latin:
        return word
    cyrillic = sum("а" <= ch <= "я" for ch in word)
    return word.translate(_LOOKALIKES) if cyrillic > latin else word


def normalize_words(text: str) -> list[str]:
    return [fix_lookalikes(word) for word in split_words(text)]


def normalize_text(text: str) -> str:
    """The normalised form of a name: words joined by single spaces."""
    return " ".join(normalize_words(text))
