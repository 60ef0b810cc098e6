"""Prefix-stripping augmentation for service names ("Услуги по ремонту компьютеров" → "Ремонт компьютеров").

ОКПД2 names services as "Услуги/Работы по <activity in the dative> …", while real item names usually state
the activity alone. `strip_service_prefix` drops "[Прочие] Услуги/Работы [(работы)] по" and puts the leading
noun phrase back into the nominative — only when its head noun is known, otherwise the name is left out
(no guessing). Adjectives before the noun agree with its gender by ending rules
(-ой → -ая, -ому → -ый/-ий/-ое, -ему → -ий/-ее); nouns by the table or regular endings (-нию/-тию → -ние/-тие,
-ке → -ка). Phrases joined by "и" or a comma are converted too ("по ремонту и техническому обслуживанию" →
"Ремонт и техническое обслуживание"); if a joined phrase cannot be converted, the name is left out.
"""

from __future__ import annotations

import re

# dative → (nominative, gender: m/f/n)
_NOUNS: dict[str, tuple[str, str]] = {
    "ремонту": ("ремонт", "m"),
    "монтажу": ("монтаж", "m"),
    "демонтажу": ("демонтаж", "m"),
    "пошиву": ("пошив", "m"),
    "сбору": ("сбор", "m"),
    "обслуживанию": ("обслуживание", "n"),
    "производству": ("производство", "n"),
    "строительству": ("строительство", "n"),
    "изготовлению": ("изготовление", "n"),
    "предоставлению": ("предоставление", "n"),
    "обеспечению": ("обеспечение", "n"),
    "управлению": ("управление", "n"),
    "проведению": ("проведение", "n"),
    "нанесению": ("нанесение", "n"),
    "восстановлению": ("восстановление", "n"),
    "сохранению": ("сохранение", "n"),
    "хранению": ("хранение", "n"),
    "страхованию": ("страхование", "n"),
    "перестрахованию": ("перестрахование", "n"),
    "обучению": ("обучение", "n"),
    "размещению": ("размещение", "n"),
    "распределению": ("распределение", "n"),
    "копированию": ("копирование", "n"),
    "тиражированию": ("тиражирование", "n"),
    "установке": ("установка", "f"),
    "аренде": ("аренда", "f"),
    "перевозке": ("перевозка", "f"),
    "обработке": ("обработка", "f"),
    "переработке": ("переработка", "f"),
    "подготовке": ("подготовка", "f"),
    "продаже": ("продажа", "f"),
    "стирке": ("стирка", "f"),
    "чистке": ("чистка", "f"),
    "очистке": ("очистка", "f"),
    "торговле": ("торговля", "f"),
    "доставке": ("доставка", "f"),
    "разработке": ("разработка", "f"),
    "транспортировке": ("транспортировка", "f"),
    "покраске": ("покраска", "f"),
    "окраске": ("окраска", "f"),
    "сборке": ("сборка", "f"),
    "отделке": ("отделка", "f"),
    "наладке": ("наладка", "f"),
    "организации": ("организация", "f"),
    "печати": ("печать", "f"),
    "эксплуатации": ("эксплуатация", "f"),
    "лизингу": ("лизинг", "m"),
    "прокату": ("прокат", "m"),
    "уходу": ("уход", "m"),
    "литью": ("литье", "n"),
    "передаче": ("передача", "f"),
    "добыче": ("добыча", "f"),
    "сдаче": ("сдача", "f"),
    "замене": ("замена", "f"),
}


def _noun_nominative(word: str) -> tuple[str, str] | None:
    """(nominative, gender) of a dative noun: the table, then two regular endings (-нию/-тию, -ке)."""
    if word in _NOUNS:
        return _NOUNS[word]
    if word.endswith(("нию", "тию")):
        return word[:-1] + "е", "n"
    if word.endswith("ке") and len(word) >= 6:
        return word[:-1] + "а", "f"
    return None


_PREFIX = re.compile(r"^\s*(?:прочие\s+)?(?:услуги|работы)(?:\s*\(работы\))?\s+по\s+", re.IGNORECASE)
_SERVICE_START = re.compile(r"^\s*(?:прочие\s+|прочая\s+)?(?:услуг|работ)", re.IGNORECASE)
_WORD = re.compile(r"^([а-яё-]+)(.*)$", re.IGNORECASE | re.DOTALL)
_ADJECTIVE_DATIVE = ("ому", "ему", "ой", "ей")
_VELAR_OR_SIBILANT = tuple("гкхжшчщ")


def has_service_prefix(name: str) -> bool:
    """True for names starting with Услуги/Работы (optionally after Прочие/Прочая)."""
    return bool(_SERVICE_START.match(name))


def _adjective_nominative(word: str, gender: str) -> str | None:
    if word.endswith("ому"):
        stem = word[:-3]
        if gender == "n":
            return stem + "ое"
        return stem + ("ий" if stem.endswith(_VELAR_OR_SIBILANT) else "ый")
    if word.endswith("ему"):
        return word[:-3] + ("ее" if gender == "n" else "ий")
    if gender == "f" and word.endswith("ой"):
        return word[:-2] + "ая"
    if gender == "f" and word.endswith("ей"):
        return word[:-2] + "яя"
    return None


def _convert_phrase(words: list[str], start: int) -> int | None:
    """Convert `(adjective)* noun` at `start` in place; returns the index after the noun or None."""
    end = start
    while end < len(words):
        core, _ = _split(words[end])
        noun = _noun_nominative(core.lower())
        if noun is not None:
            break
        if not core.lower().endswith(_ADJECTIVE_DATIVE):
            return None
        end += 1
    else:
        return None
    nominative, gender = noun
    noun_tail = _split(words[end])[1]
    converted = []
    for word in words[start:end]:
        core, tail = _split(word)
        adjective = _adjective_nominative(core.lower(), gender) if core else None
        if adjective is None or tail:
            return None
        converted.append(adjective + tail)
    words[start:end] = converted
    words[end] = nominative + noun_tail
    return end + 1


def _split(word: str) -> tuple[str, str]:
    match = _WORD.match(word)
    return (match.group(1), match.group(2)) if match else ("", word)


def split_service_prefix(name: str) -> tuple[str, str] | None:
    """(the "[Прочие] Услуги/Работы [(работы)] по" prefix, the rest in the dative) or None without one."""
    match = _PREFIX.match(name)
    if not match:
        return None
    return name[: match.end()].strip(), name[match.end() :]


def strip_service_prefix_parts(name: str) -> tuple[str, str] | None:
    """(the activity in the nominative, the rest unchanged), or None when the rule does not apply.

    "Услуги по ремонту и техническому обслуживанию судов" → ("ремонт и техническое обслуживание", "судов").
    """
    split = split_service_prefix(name)
    if split is None:
        return None
    words = split[1].split()
    position = _convert_phrase(words, 0)
    if position is None:
        return None
    while position < len(words):
        if words[position - 1].endswith(","):
            start = position
        elif words[position] == "и" and position + 1 < len(words):
            start = position + 1
        else:
            break
        converted = _convert_phrase(words, start)
        if converted is None:
            return None
        position = converted
    return " ".join(words[:position]), " ".join(words[position:])


def strip_service_prefix(name: str) -> str | None:
    """The name without its "Услуги по"/"Работы по" prefix, or None when the rule does not apply."""
    parts = strip_service_prefix_parts(name)
    if parts is None:
        return None
    text = " ".join(part for part in parts if part)
    return text[:1].upper() + text[1:]


def augment_services(names: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """Extra (name, 'service') rows: the prefix-stripped form of every service name the rule applies to."""
    stripped = (strip_service_prefix(n) for n, label in zip(names, labels, strict=True) if label == "service")
    extra = [name for name in stripped if name is not None]
    return extra, ["service"] * len(extra)
