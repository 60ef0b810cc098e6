"""Small hand-made dictionaries of goods-vs-services cues, evaluated per normalised word."""

from __future__ import annotations

import re

# Word-initial stems of nouns/adjectives that name an activity rather than a thing.
SERVICE_STEMS: tuple[str, ...] = (
    "услуг",
    "работ",
    "ремонт",
    "монтаж",
    "демонтаж",
    "обслуживан",
    "техобслуж",
    "сервис",
    "аренд",
    "прокат",
    "лизинг",
    "перевоз",
    "перевозк",
    "транспортировк",
    "доставк",
    "хранени",
    "обучени",
    "консультац",
    "консалтинг",
    "разработк",
    "проектирован",
    "установк",
    "наладк",
    "пусконаладк",
    "настройк",
    "поверк",
    "калибровк",
    "диагностик",
    "деятельност",
    "организац",
    "проведени",
    "оказани",
    "выполнени",
    "сопровожден",
    "уборк",
    "стирк",
    "чистк",
    "очистк",
    "покраск",
    "окраск",
    "обработк",
    "страхован",
    "аудит",
    "экспертиз",
    "оценк",
    "охран",
    "подготовк",
    "предоставлен",
    "изготовлени",
    "пошив",
    "печат",
    "реклам",
    # what price lists of clinics, workshops, salons and repair services name their services by
    "замен",
    "мойк",
    "стрижк",
    "заправк",
    "лечени",
    "удалени",
    "протезир",
    "пломбир",
    "осмотр",
    "массаж",
    "исследовани",
    "прием",
    "вызов",
    "выезд",
    "тонировк",
    "шиномонтаж",
    "полировк",
    "химчистк",
    "окрашивани",
    "укладк",
    "замер",
    "сборк",
    "прочистк",
    "отделк",
    "штукатурк",
    "шпаклевк",
    "поклейк",
    "регулировк",
    "балансировк",
    "промывк",
    "дезинфекц",
    "дератизац",
    "вывоз",
    "утилизац",
    "эвакуац",
    "буксировк",
    "перевод",
    "проживани",
    "бронировани",
    "оформлени",
    "регистрац",
)

# Stems that name buying goods in procurement plans and purchase titles ("Поставка серверного
# оборудования", "Закупка канцтоваров"): the object is a product although the word is a verbal noun.
PURCHASE_STEMS: tuple[str, ...] = ("поставк", "закупк", "приобретени", "покупк")

# Stand-alone unit words; в/а/к are units too but also prepositions, so only count when glued to a number.
UNIT_TOKENS: frozenset[str] = frozenset(
    {
        "кг", "г", "гр", "мг", "т", "тн", "л", "мл", "м", "мм", "см", "км", "м2", "м3", "шт", "уп", "упак",
        "пач", "рул", "компл", "пар", "кв", "куб", "вт", "квт", "ква", "мач", "гб", "тб", "мб", "мп", "дюйм",
        "гц", "ггц", "атм", "бар",
    }
)  # fmt: skip

_NUMBER_WITH_UNIT = re.compile(r"\d+(кг|гр|г|мг|тн|мл|л|мм|см|км|м|шт|гб|тб|мб|вт|квт|мач|гц|ггц|в|а)")


def word_cues(word: str) -> list[str]:
    """Cue names triggered by one normalised word; the featurizer hashes them as indicator features."""
    cues: list[str] = []
    if word.startswith(PURCHASE_STEMS):
        cues.append("buy")
    if word.startswith(SERVICE_STEMS):
        stem = max((s for s in SERVICE_STEMS if word.startswith(s)), key=len)
        cues.append("svc")
        cues.append("svc:" + stem)
    if word in UNIT_TOKENS or _NUMBER_WITH_UNIT.fullmatch(word):
        cues.append("unit")
    has_digit = any(ch.isdigit() for ch in word)
    if has_digit:
        cues.append("num" if word.isdigit() else "model")
    if word.isascii() and not has_digit and len(word) > 1:
        cues.append("latin")
    return cues
