"""Put the leading noun phrase of an ОКПД2 goods name into the genitive ("Насосы центробежные" → "насосов
центробежных"), so that it can follow "Поставка", "Ремонт", "Монтаж" …

Russian genitive endings cannot be derived from the nominative by rule alone (насосы → насосов, машины →
машин, ткани → тканей). Every candidate form made by the ending rules below is therefore checked against a
vocabulary of word forms seen in ОКПД2 itself, which is full of genitives ("Услуги по производству
насосов …", "Части машин …"); a phrase is converted only when each word has exactly one attested candidate
(after agreement with its adjectives is taken into account). Otherwise the name is left out: no guessing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

_WORD_FORMS = re.compile(r"[а-яё]+(?:-[а-яё]+)*")
_CYRILLIC_WORD = re.compile(r"^[а-яё]+(?:-[а-яё]+)*$")
# Neuter nouns in -ие ("оборудование", "изделие", "покрытие") look like plural adjectives ("бытовые").
_NEUTER_NOUN_IE = re.compile(r"(?:[аеяи]ние|тие|лие|дие|вие|рие|сие|зие)$")
_CONJUNCTIONS = frozenset({"и", "или"})

# adjective nominative ending → (number/gender, genitive endings in order of preference)
_ADJECTIVE_ENDINGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ые", "pl", ("ых",)),
    ("ие", "pl", ("их",)),
    ("ый", "m", ("ого",)),
    ("ой", "m", ("ого",)),
    ("ий", "m", ("его", "ого")),
    ("ая", "f", ("ой", "ей")),
    ("яя", "f", ("ей",)),
    ("ое", "n", ("ого",)),
    ("ее", "n", ("его",)),
)

# noun nominative ending → [(number/gender, genitive ending)], in order of preference
_NOUN_ENDINGS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("ия", (("pl", "ий"), ("f", "ии"))),
    ("ие", (("n", "ия"),)),
    ("ье", (("n", "ья"),)),
    ("ы", (("pl", "ов"), ("pl", ""))),
    # no zero ending for -и: "приемники" → "приемник" would be attested (as a nominative singular)
    ("и", (("pl", "ей"), ("pl", "ов"), ("pl", "ев"))),
    ("а", (("f", "ы"), ("f", "и"), ("pl", ""))),
    ("я", (("f", "и"), ("pl", "ей"))),
    ("о", (("n", "а"),)),
    ("е", (("n", "я"),)),
    ("ь", (("m", "я"), ("f", "и"))),
    ("й", (("m", "я"),)),
)
_CONSONANT_FINAL = re.compile(r"[бвгджзклмнпрстфхцчшщ]$")


@dataclass(frozen=True)
class Vocabulary:
    """Attested word forms; `after_plural_adjective` holds words seen right after an -ых/-их word."""

    forms: frozenset[str]
    after_plural_adjective: frozenset[str]

    def __contains__(self, word: object) -> bool:
        return word in self.forms


def build_vocabulary(texts: Iterable[str]) -> Vocabulary:
    """Lower-cased word forms of the given texts (ё kept as written)."""
    forms: set[str] = set()
    after: set[str] = set()
    for text in texts:
        words = _WORD_FORMS.findall(text.lower())
        forms.update(words)
        after.update(w for previous, w in itertools.pairwise(words) if previous.endswith(("ых", "их")))
    return Vocabulary(frozenset(forms), frozenset(after))


def is_adjective(word: str) -> bool:
    """True for a word with a nominative adjective ending (and not a neuter noun in -ие)."""
    if not _CYRILLIC_WORD.match(word):
        return False
    if word.endswith("ие") and _NEUTER_NOUN_IE.search(word):
        return False
    return any(word.endswith(ending) for ending, _, _ in _ADJECTIVE_ENDINGS) and len(word) > 3


def adjective_agreement(word: str) -> str | None:
    """'pl', 'm', 'f' or 'n' for a nominative adjective, None for anything else."""
    if not is_adjective(word):
        return None
    return next(agreement for ending, agreement, _ in _ADJECTIVE_ENDINGS if word.endswith(ending))


def _adjective_genitive(word: str, vocabulary: Vocabulary) -> str | None:
    for ending, _, genitives in _ADJECTIVE_ENDINGS:
        if word.endswith(ending):
            stem = word[: -len(ending)]
            return next((stem + g for g in genitives if stem + g in vocabulary), None)
    return None


def noun_genitive_candidates(word: str) -> list[tuple[str, str]]:
    """(agreement, genitive form) candidates for a nominative noun, most likely first; not yet attested."""
    for ending, options in _NOUN_ENDINGS:
        if word.endswith(ending):
            stem = word[: -len(ending)]
            return [(agreement, stem + genitive) for agreement, genitive in options if stem + genitive]
    if _CONSONANT_FINAL.search(word):
        return [("m", word + "а")]
    return []


def _attested(word: str, agreement: str, form: str, vocabulary: Vocabulary) -> bool:
    if form == word or form not in vocabulary:
        return False
    # A zero-ending plural ("машины" → "машин") is also the nominative singular of a masculine noun
    # ("компас"): accept it only where the corpus shows it after a plural adjective ("счетных машин").
    zero_ending = agreement == "pl" and len(form) < len(word) and word.startswith(form)
    return not zero_ending or form in vocabulary.after_plural_adjective


def _noun_genitive(word: str, agreement: str | None, vocabulary: Vocabulary) -> tuple[str, str] | None:
    attested = [
        (a, form) for a, form in noun_genitive_candidates(word) if _attested(word, a, form, vocabulary)
    ]
    if agreement is not None:
        attested = [(a, form) for a, form in attested if a == agreement]
        return attested[0] if attested else None
    if len({a == "pl" for a, _ in attested}) != 1:
        return None  # unattested, or attested both as a singular and as a plural: ambiguous
    return attested[0]


@dataclass
class _Phrase:
    nouns: list[int]
    adjectives: list[int]
    end: int


def _scan_phrase(words: list[str]) -> _Phrase | None:
    """Indices of the leading `adj* noun adj* ((и|или) (adj+ [noun] | noun) adj*)*` in `words`."""
    nouns: list[int] = []
    adjectives: list[int] = []
    position = 0
    while position + 1 < len(words) and is_adjective(words[position]):
        adjectives.append(position)
        position += 1
    if position >= len(words) or not _CYRILLIC_WORD.match(words[position]):
        return None
    nouns.append(position)
    position += 1
    while position < len(words):
        word = words[position]
        if is_adjective(word):
            adjectives.append(position)
            position += 1
        elif (
            word in _CONJUNCTIONS and position + 1 < len(words) and _CYRILLIC_WORD.match(words[position + 1])
        ):
            position += 1
            while position + 1 < len(words) and is_adjective(words[position]):
                adjectives.append(position)
                position += 1
            # "прочие и агрохимические продукты": a word after the conjunct's adjectives is its noun.
            if not is_adjective(words[position]) and words[position] not in _STOP_WORDS:
                nouns.append(position)
            elif is_adjective(words[position]):
                adjectives.append(position)
            else:
                return None
            position += 1
        else:
            break
    return _Phrase(nouns, adjectives, position)


# Prepositions and conjunctions: never a noun of the phrase.
_STOP_WORDS = frozenset(
    {"и", "или", "для", "из", "с", "со", "без", "на", "в", "во", "по", "от", "до", "к", "под", "над", "при",
     "кроме", "типа", "а", "не", "же", "из-под", "об", "о"}
)  # fmt: skip


def _head_agreement(words: list[str], phrase: _Phrase, vocabulary: Vocabulary) -> str | None:
    agreements = {adjective_agreement(words[i]) for i in phrase.adjectives}
    if len(agreements) == 1:
        return agreements.pop()
    if agreements:
        return None
    noun = _noun_genitive(words[phrase.nouns[0]], None, vocabulary)
    return noun[0] if noun else None


def _convert_trailing(words: list[str], start: int, agreement: str, vocabulary: Vocabulary) -> bool:
    """Put adjectives after a complement that agree with the head into the genitive, in place.

    "Тракторы для сельского хозяйства прочие" → "… прочих". Adjectives in -ой are left alone (they are
    also genitive feminine: "Мясо птицы механической обвалки"); a nominative adjective after a conjunction
    ("… снимка и прочие фотокамеры") means an unconverted second noun phrase: False.
    """
    seen_conjunction = False
    for index in range(start, len(words)):
        word = words[index]
        seen_conjunction = seen_conjunction or word in _CONJUNCTIONS
        if not is_adjective(word) or word.endswith("ой"):
            continue
        if seen_conjunction or adjective_agreement(word) != agreement:
            return False
        genitive = _adjective_genitive(word, vocabulary)
        if genitive is None:
            return False
        words[index] = genitive
    return True


def genitive_phrase(segment: str, vocabulary: Vocabulary) -> str | None:
    """The segment with its leading noun phrase in the genitive (lower case), or None if not attested.

    Words after the phrase (a genitive complement, a prepositional phrase) keep their form:
    "Мясо птицы механической обвалки" → "мяса птицы механической обвалки".
    """
    original = segment.split()
    words = segment.lower().split()
    if not words or not _CYRILLIC_WORD.match(words[0]):
        return None
    phrase = _scan_phrase(words)
    if phrase is None:
        return None
    agreement = _head_agreement(words, phrase, vocabulary)
    if agreement is None:
        return None
    converted = list(words[: phrase.end]) + original[phrase.end :]
    for index in phrase.nouns:
        noun = _noun_genitive(words[index], agreement, vocabulary)
        if noun is None:
            return None
        converted[index] = noun[1]
    for index in phrase.adjectives:
        adjective = _adjective_genitive(words[index], vocabulary)
        if adjective is None:
            return None
        converted[index] = adjective
    trailing = [w.lower() for w in converted[phrase.end :]]
    if not _convert_trailing(trailing, 0, agreement, vocabulary):
        return None
    return " ".join(
        converted[: phrase.end]
        + [t if t != w.lower() else w for t, w in zip(trailing, converted[phrase.end :], strict=True)]
    )


_PARENTHESES = re.compile(r"\s*\([^()]*\)")


def head_segment(name: str) -> str:
    """The name without parenthesised parts, up to its first comma or semicolon, stripped."""
    return re.split(r"[,;()]", _PARENTHESES.sub("", name), maxsplit=1)[0].strip()
