"""Rule-based rewrites of ОКПД2 names into the forms real catalogues, price lists and procurement titles use.

Every rule is a small function from one source row to zero or more new names; the label of a new name is
fixed by the rule (see `RULES` and models/datasets/data/DATASET.md), never chosen per name. A rule that cannot
be applied reliably to a name (unknown word form, unusual structure) yields nothing for it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from models.datasets import catalogue_style as style
from models.datasets.augmentation import (
    split_service_prefix,
    strip_service_prefix,
    strip_service_prefix_parts,
)
from models.datasets.inflection import Vocabulary, genitive_phrase, head_segment, is_adjective

PRODUCT = "product"
SERVICE = "service"


@dataclass(frozen=True)
class SourceRow:
    name: str
    label: str
    code: str


@dataclass(frozen=True)
class Context:
    """What rules share: the seed and the vocabulary of attested ОКПД2 word forms."""

    seed: int
    vocabulary: Vocabulary

    def rng(self, rule: str, row: SourceRow) -> random.Random:
        # Seeded per (rule, row): a row's variants do not depend on which other rows are built.
        return random.Random(f"{self.seed}\x1f{rule}\x1f{row.code}\x1f{row.name}")


RuleFunction = Callable[[SourceRow, Context], list[str]]


@dataclass(frozen=True)
class Rule:
    transform: str
    slice: str
    source_label: str | None  # rows the rule reads (None = every row)
    label: str | None  # label of the rows it writes (None = the source row's label)
    description: str
    example: str
    apply: RuleFunction


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _maybe(rng: random.Random, probability: float, text: str) -> str:
    return text if rng.random() < probability else ""


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part).replace(" ,", ",")


# --- services -------------------------------------------------------------------------------------------


def original(row: SourceRow, ctx: Context) -> list[str]:
    return [row.name]


def _service_stripped(name: str) -> str | None:
    """The prefix-stripped name, except "Поставка …" (catering in ОКПД2), which procurement uses for goods."""
    stripped = strip_service_prefix(name)
    return None if stripped is None or stripped.lower().startswith("поставка") else stripped


def prefix_stripped(row: SourceRow, ctx: Context) -> list[str]:
    stripped = _service_stripped(row.name)
    return [stripped] if stripped else []


_SERVICES_IN_AREA = re.compile(r"^\s*(?:прочие\s+)?услуги\s+в\s+области\s+(.+)$", re.IGNORECASE)
_SERVICES_OF = re.compile(
    r"^\s*(?:прочие\s+)?(?:услуги|работы)\s+([а-яё-]+(?:ого|его|ой|ей|ых|их)\s.+)$", re.I
)
_TRADE = re.compile(r"^(оптовая|розничная) торговля\b", re.IGNORECASE)


def activity_form(row: SourceRow, ctx: Context) -> list[str]:
    """ОКВЭД-style activity descriptions: "Деятельность по/в области …", "Торговля оптовая …"."""
    variants = []
    split = split_service_prefix(row.name)
    if split is not None:
        variants.append("Деятельность по " + split[1])
    elif match := _SERVICES_IN_AREA.match(row.name):
        variants.append("Деятельность в области " + match.group(1))
    elif match := _SERVICES_OF.match(row.name):
        variants.append("Деятельность " + match.group(1))
    stripped = _service_stripped(row.name)
    if stripped and (trade := _TRADE.match(stripped)):
        variants.append(f"Торговля {trade.group(1).lower()}" + stripped[trade.end() :])
    return variants


_PROCUREMENT_SERVICE = re.compile(
    r"^\s*(?:прочие\s+)?(услуги|работы)((?:\s+[а-яё-]+(?:ые|ие))*)(\s*\(работы\))?"
    r"\s+(по|в области|связанные с)\s+(.+)$",
    re.IGNORECASE,
)


def _plural_adjectives_genitive(adjectives: str) -> str:
    return " ".join(
        word[:-2] + ("ых" if word.endswith("ые") else "их") for word in adjectives.lower().split()
    )


def procurement_service(row: SourceRow, ctx: Context) -> list[str]:
    """ "Оказание услуг по …", "Выполнение работ по …", "Оказание консультативных услуг по …" (+ suffix)."""
    rng = ctx.rng("procurement_service", row)
    if match := _PROCUREMENT_SERVICE.match(row.name):
        kind, adjectives, also_works, preposition, rest = match.groups()
        works = kind.lower() == "работы"
        head = "Выполнение" if works else rng.choice(("Оказание", "Оказание", "Предоставление"))
        noun = _join(_plural_adjectives_genitive(adjectives), "работ" if works else "услуг")
        text = _join(head, noun, "(выполнение работ)" if also_works else "", preposition.lower(), rest)
    elif match := _SERVICES_OF.match(row.name):
        text = "Оказание услуг " + match.group(1)
    else:
        return []
    return [_join(text, _maybe(rng, 0.4, style.procurement_suffix(rng)))]


# Heads of activities that price lists name by themselves ("Ремонт обуви", "Монтаж кондиционера").
PRICE_LIST_ACTIONS: frozenset[str] = frozenset(
    {
        "ремонт", "монтаж", "демонтаж", "установка", "замена", "химическая чистка", "чистка", "уборка",
        "стирка", "пошив", "изготовление", "техническое обслуживание", "аренда", "прокат", "перевозка",
        "доставка", "отделка", "покраска", "окраска", "крашение", "восстановление", "наладка", "подключение",
        "обновление", "вязание", "печать", "копирование", "бурение", "сборка", "диагностика",
    }
)  # fmt: skip
# Qualifiers price lists leave out; the object list is cut where one starts.
_QUALIFIER = re.compile(
    r"\s*(?:;|\bпо индивидуальному заказу|\bв специализированных магазинах|\bотдельные\b|\bвыполняемые\b|"
    r"\bне включенн|\bкроме\b|,\s*связанн|,\s*являющ|\bс использованием\b|\bв том числе\b|\bа также\b|"
    r"\bвключая\b).*$",
    re.IGNORECASE,
)
_ENUMERATION = re.compile(r",\s*|\s+(?:и|или)\s+")
_PARENTHESES = re.compile(r"\(([^()]*)\)")
_NOT_OBJECTS = frozenset({"др", "т.п", "т.д", "прочих", "других", "т. п", "пр"})
_PRONOUNS = frozenset({"их", "его", "ее", "её", "им", "них", "ним", "нему", "ней", "это", "этих"})
# Words catalogues and price lists leave out ("прочих машин" → "машин").
_VAGUE_WORDS = frozenset(
    {"прочие", "прочий", "прочая", "прочее", "прочих", "прочего", "прочей", "другие", "других", "другой",
     "другого", "аналогичные", "аналогичных", "различные", "различных"}
)  # fmt: skip
_PREPOSITIONS = frozenset(
    {"в", "во", "на", "по", "с", "со", "для", "из", "от", "до", "к", "при", "под", "над"}
)  # fmt: skip
_GENITIVE_ADJECTIVE = re.compile(r"(?:ых|их|ого|его|ой)$")
# Participles and verbs: where a piece stops being a plain object.
_PARTICIPLE = re.compile(
    r"(?:ющ|ящ|ащ|ущ|вш|емы|имы|(?:включ|связ|предназнач|изготовл|произвед|переработ|использ|оснащ)енн)[а-я]*$"
)


def _object_pieces(rest: str) -> list[str]:
    """Short objects an activity applies to, from an enumeration ("часов, портсигаров и др." → 2 pieces).

    Parenthesised parts are dropped: their case is not that of the enumeration ("(сигнализация …)").
    """
    pieces = []
    for piece in _ENUMERATION.split(_PARENTHESES.sub(" ", _QUALIFIER.sub("", rest))):
        words = [w for w in piece.strip(" .").split() if w.lower() not in _VAGUE_WORDS]
        if _is_plain_object(words):
            pieces.append(" ".join(words))
        if any(w in _PREPOSITIONS for w in words):
            break  # "оборудования для сельского и лесного хозяйства": the rest belongs to the preposition
    return pieces


def _is_plain_object(words: list[str]) -> bool:
    if not 1 <= len(words) <= _MAX_OBJECT_WORDS or " ".join(words) in _NOT_OBJECTS:
        return False
    if words[0] in _PREPOSITIONS or any(_PARTICIPLE.search(w) or w in _PRONOUNS for w in words):
        return False
    if not all(re.fullmatch(r"[а-яё]+(?:-[а-яё]+)*", w) for w in words):
        return False
    # "легковых и грузовых автомобилей" splits into "легковых", "морских судов заграничного и каботажного
    # плавания" into "морских судов заграничного": an adjective without its noun ends the piece.
    return not _GENITIVE_ADJECTIVE.search(words[-1])


def _price_list_activity(activity: str, rng: random.Random) -> str | None:
    heads = [a.strip() for a in re.split(r",\s*|\s+и\s+", activity) if a.strip() in PRICE_LIST_ACTIONS]
    return rng.choice(heads) if heads else None


def _service_decorations(rng: random.Random, text: str, with_model: bool) -> str:
    if with_model and rng.random() < 0.15:
        text = _join(text, style.brand(rng), _maybe(rng, 0.6, style.model_code(rng)))
    if rng.random() < 0.3:
        text = style.join_spec(text, style.service_spec(rng, text))
    return _join(text, _maybe(rng, 0.15, style.price(rng)))


_PRICE_LINES_PER_NAME = 3


def price_list_service(row: SourceRow, ctx: Context) -> list[str]:
    """ "Услуги по ремонту часов, портсигаров и др." → "Ремонт портсигаров" (+ unit, price, brand)."""
    parts = strip_service_prefix_parts(row.name)
    if parts is None:
        return []
    rng = ctx.rng("price_list_service", row)
    activity = _price_list_activity(parts[0], rng)
    # "Доставка посылок … и доставки" must not become "Доставка доставки"
    pieces = [p for p in _object_pieces(parts[1]) if activity and p[:5] != activity[:5]]
    if activity is None or not pieces:
        return []
    chosen = rng.sample(pieces, min(_PRICE_LINES_PER_NAME, len(pieces)))
    with_model = activity in {"ремонт", "техническое обслуживание", "замена", "установка", "диагностика"}
    return [_service_decorations(rng, _capitalise(f"{activity} {obj}"), with_model) for obj in chosen]


# Activities done to goods, by ОКПД2 code prefix (the most specific prefix wins).
PRODUCT_ACTIONS: dict[str, tuple[str, ...]] = {
    "13.9": ("Химчистка", "Стирка", "Ремонт"),
    "19.20.29": ("Замена",),  # lubricating oils
    "14": ("Пошив", "Ремонт", "Химчистка", "Подгонка"),
    "15.2": ("Ремонт", "Чистка", "Замена набоек"),
    "22.11": ("Замена", "Ремонт", "Хранение"),
    "22.2": ("Монтаж", "Установка", "Демонтаж"),
    "23.3": ("Укладка", "Монтаж"),
    "23.6": ("Монтаж", "Установка", "Демонтаж"),
    "25.1": ("Монтаж", "Демонтаж", "Покраска"),
    "25.2": ("Монтаж", "Ремонт", "Техническое обслуживание", "Замена"),
    "26": ("Ремонт", "Диагностика", "Настройка", "Установка", "Техническое обслуживание", "Чистка", "Замена"),
    "27": ("Монтаж", "Установка", "Замена", "Ремонт", "Подключение", "Демонтаж"),
    "28": ("Ремонт", "Техническое обслуживание", "Монтаж", "Пусконаладка", "Аренда", "Диагностика", "Замена"),
    "29": ("Ремонт", "Техническое обслуживание", "Диагностика", "Аренда", "Мойка", "Покраска"),
    "29.3": ("Замена", "Установка", "Ремонт", "Диагностика"),
    "30": ("Ремонт", "Техническое обслуживание", "Аренда"),
    "16.2": ("Монтаж", "Установка"),
    "31": ("Сборка", "Ремонт", "Реставрация", "Доставка и сборка"),
    "32.5": ("Ремонт", "Техническое обслуживание", "Поверка", "Калибровка"),
}
_MAX_OBJECT_WORDS = 5
_ACTIONS_PER_NAME = 2


def _actions_for(code: str) -> tuple[str, ...]:
    prefixes = [p for p in PRODUCT_ACTIONS if code.startswith(p)]
    return PRODUCT_ACTIONS[max(prefixes, key=len)] if prefixes else ()


def _genitive_head(row: SourceRow, ctx: Context) -> str | None:
    segment = head_segment(row.name)
    if not segment or len(segment.split()) > _MAX_OBJECT_WORDS:
        return None
    return genitive_phrase(segment, ctx.vocabulary)


def action_on_product(row: SourceRow, ctx: Context) -> list[str]:
    """ "Насосы центробежные" (division 28) → "Ремонт насосов центробежных": an activity noun + goods."""
    actions = _actions_for(row.code)
    if not actions:
        return []
    genitive = _genitive_head(row, ctx)
    if genitive is None:
        return []
    rng = ctx.rng("action_on_product", row)
    with_model = style.family_of(row.code) in _BRANDED_FAMILIES
    chosen = rng.sample(actions, min(_ACTIONS_PER_NAME, len(actions)))
    return [_service_decorations(rng, f"{action} {genitive}", with_model) for action in chosen]


# --- goods ----------------------------------------------------------------------------------------------

_BARE_NOUN_WORDS = 4
_BRANDED_FAMILIES = frozenset({"electronics", "electrical", "machinery", "vehicle", "medical"})


def short_name(name: str) -> str | None:
    """The head of a goods name as a catalogue writes it: the noun with its adjectives, before any comma or
    parenthesis, without "прочие"; a bare noun keeps up to three following words ("Части электродвигателей").
    """
    words = [w for w in head_segment(name).split() if w.lower() not in _VAGUE_WORDS]
    if not words:
        return None
    noun = 0
    while noun < len(words) - 1 and is_adjective(words[noun].lower()):
        noun += 1
    phrase = words[: noun + 1]
    for word in words[noun + 1 :]:
        if not is_adjective(word.lower()):
            break
        phrase.append(word)
    if len(phrase) == 1:
        phrase = words[:_BARE_NOUN_WORDS]
    # cut mid-phrase ("Изделия для новогодних и"): drop a dangling preposition, conjunction or adjective
    while len(phrase) > 1 and (
        phrase[-1].lower() in _DANGLING or _GENITIVE_ADJECTIVE.search(phrase[-1].lower())
    ):
        phrase.pop()
    return " ".join(phrase)


_DANGLING = _PREPOSITIONS | _PRONOUNS | {"и", "или"}


def catalogue_product(row: SourceRow, ctx: Context) -> list[str]:
    """ "Молоко питьевое «Агродом» 3,2% 1 л", "Принтеры Veltor CF226X": brand, model code, units, article."""
    short = short_name(row.name)
    if short is None:
        return []
    rng = ctx.rng("catalogue_product", row)
    family = style.family_of(row.code)
    variants = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        brand = style.brand(rng)
        if family in _BRANDED_FAMILIES:
            text = _join(short, _maybe(rng, 0.8, brand), _maybe(rng, 0.8, style.model_code(rng)))
        elif family in {"food", "chemical"} and rng.random() < 0.5:
            text = f"{short} «{brand}»"
        else:
            text = _join(short, _maybe(rng, 0.4, brand), _maybe(rng, 0.15, style.model_code(rng)))
        specs = {style.goods_spec(rng, family, short) for _ in range(rng.choice((1, 1, 2)))}
        for spec in sorted(specs):
            text = style.join_spec(text, spec)
        if family == "textile" and rng.random() < 0.3:
            text = _join(text, rng.choice(style.COLOURS))
        text = _join(text, _maybe(rng, 0.15, style.article(rng)), _maybe(rng, 0.15, style.price(rng)))
        variants.append(text)
    return variants


PROCUREMENT_VERBS: tuple[str, ...] = ("Поставка", "Поставка", "Закупка", "Приобретение")


def procurement_product(row: SourceRow, ctx: Context) -> list[str]:
    """ "Насосы центробежные" → "Поставка насосов центробежных для нужд …" (purchase of goods)."""
    rng = ctx.rng("procurement_product", row)
    genitive = _genitive_head(row, ctx)
    if genitive is not None:
        text = f"{rng.choice(PROCUREMENT_VERBS)} {genitive}"
    elif rng.random() < 0.25 and (short := short_name(row.name)):
        text = f"Поставка товара: {short}"
    else:
        return []
    return [_join(text, _maybe(rng, 0.4, style.procurement_suffix(rng)))]


RULES: tuple[Rule, ...] = (
    Rule(
        "original", "okpd2_original", None, None,
        "The ОКПД2 name as it is, with the label of the bundled file.",
        "Услуги по ремонту компьютеров → service", original,
    ),
    Rule(
        "strip_service_prefix", "service_prefix_stripped", SERVICE, SERVICE,
        "Drop 'Услуги/Работы по' and put the activity into the nominative (models/datasets/augmentation.py).",
        "Услуги по ремонту компьютеров → Ремонт компьютеров", prefix_stripped,
    ),
    Rule(
        "activity_form", "service_activity_form", SERVICE, SERVICE,
        "ОКВЭД-style activity description: 'Деятельность по/в области …', 'Торговля оптовая …'.",
        "Услуги по ремонту компьютеров → Деятельность по ремонту компьютеров", activity_form,
    ),
    Rule(
        "procurement_service", "service_procurement_phrase", SERVICE, SERVICE,
        "Procurement title of a service purchase: 'Оказание услуг по …', 'Выполнение работ по …', "
        "optionally 'для нужд …', 'на 2025 год'.",
        "Работы по монтажу лифтов → Выполнение работ по монтажу лифтов", procurement_service,
    ),
    Rule(
        "price_list_service", "service_price_list", SERVICE, SERVICE,
        "Price-list line: a price-list activity (ремонт, монтаж, чистка …) with one object of the "
        "enumeration, optionally a unit ('за 1 м2'), a price, a brand/model.",
        "Услуги по ремонту часов, портсигаров и др. → Ремонт портсигаров", price_list_service,
    ),
    Rule(
        "action_on_product", "service_action_on_product", PRODUCT, SERVICE,
        "An activity noun before goods of a division where it is done (repair of machines, tailoring of "
        "clothes …) makes a service; the goods phrase is put into an attested genitive.",
        "Насосы центробежные → Ремонт насосов центробежных", action_on_product,
    ),
    Rule(
        "catalogue_product", "product_with_brand_model_unit", PRODUCT, PRODUCT,
        "Shop-catalogue line: short goods name with a made-up brand, Latin model code, pack size/unit, "
        "percentage, article number or price, by goods family.",
        "Молоко питьевое → Молоко питьевое «Агродом» 3,2% 1 л", catalogue_product,
    ),
    Rule(
        "procurement_product", "product_procurement_phrase", PRODUCT, PRODUCT,
        "Procurement title of a goods purchase: 'Поставка/Закупка/Приобретение' + the goods in the "
        "genitive, optionally 'для нужд …'.",
        "Оборудование серверное → Поставка оборудования серверного", procurement_product,
    ),
)  # fmt: skip


def variants_of(row: SourceRow, ctx: Context) -> list[tuple[Rule, str]]:
    """Every (rule, new name) the rules produce for one source row, in rule order."""
    out = []
    for rule in RULES:
        if rule.source_label is None or rule.source_label == row.label:
            out.extend((rule, name) for name in rule.apply(row, ctx) if name.strip())
    return out


def label_of(rule: Rule, row: SourceRow) -> str:
    return rule.label if rule.label is not None else row.label
