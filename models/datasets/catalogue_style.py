"""Seeded generators of the tokens real catalogues, price lists and procurement titles add to a name.

Brands are made up from the syllable lists below (no real brand list is used), model codes are Latin
letter/digit patterns like "CF226X", pack sizes and units follow the goods' ОКПД2 division. Tokens that
both goods and services carry in real data (prices, article numbers, brands and models in repair price
lists, "для нужд …" in procurement titles) are added to both labels, so that they do not become a label cue
by themselves.
"""

from __future__ import annotations

import random

LATIN_SYLLABLES: tuple[str, ...] = (
    "vel", "tor", "nor", "tek", "lux", "max", "ion", "sun", "dex", "kor", "ra", "lin", "gen", "vo", "zen",
    "ari", "mi", "sol", "tron", "fi", "ka", "ro", "plex", "vin", "sta",
)  # fmt: skip
CYRILLIC_SYLLABLES: tuple[str, ...] = (
    "агро", "мол", "дом", "сиб", "эко", "вол", "нов", "тех", "рус", "лад", "снеж", "зар", "бел", "крас",
    "гор", "луг", "сад", "мир", "пром", "степ",
)  # fmt: skip
CYRILLIC_ENDINGS: tuple[str, ...] = ("ко", "ика", "ия", "ус", "он", "ор", "ица", "ушка", "ный", "ово")
MODEL_LETTERS = "ABCDEFGHJKLMNPRSTVWXZ"
COLOURS: tuple[str, ...] = ("черный", "белый", "серый", "синий", "красный", "бежевый", "зеленый")

# Pack sizes and specs by goods family; the family of a name follows from its ОКПД2 division.
FAMILY_SPECS: dict[str, tuple[str, ...]] = {
    "food": (
        "200 г", "250 г", "500 г", "900 г", "1 кг", "5 кг", "450 г", "в/у", "зам.", "охл.", "ГОСТ", "10 шт",
        "20 пак.", "весовой", "фас. 0,5 кг",
    ),
    "food_liquid": ("1 л", "0,5 л", "0,9 л", "1,5 л", "3,2%", "2,5%", "15%", "0,33 л", "ПЭТ 1,5 л", "т/п"),
    "chemical": ("5 л", "10 л", "1 кг", "25 кг", "500 мл", "0,75 л", "1 л", "канистра 20 л", "ГОСТ", "ТУ"),
    "textile": ("р. 48", "р. 52-54", "размер 42-44", "рост 170-176", "100% хлопок", "150 г/м2", "1 шт"),
    "paper": ("А4", "А3", "500 л.", "80 г/м2", "100 шт", "48 л.", "в клетку", "1 рул."),
    "building": (
        "50 кг", "25 кг", "6 м", "1,2 м", "10 шт", "2500х1250х12 мм", "Ø20 мм", "М10х50", "1 м3", "1 т",
        "ГОСТ 8240-97",
    ),
    "electrical": ("220 В", "12 В", "1,5 кВт", "65 Вт", "16 А", "IP54", "3х2,5 мм2", "1 шт", "E27"),
    "electronics": ("8 ГБ", "16 ГБ", "512 ГБ", "24\"", "27\"", "1920x1080", "Wi-Fi", "USB 3.0", "1 шт"),
    "machinery": ("1,5 кВт", "380 В", "220 В", "DN50", "PN16", "3000 об/мин", "1 шт", "компл."),
    "vehicle": ("2,0 л", "АКПП", "4x4", "1 шт", "компл.", "R16"),
    "medical": ("10 мл", "5 мл", "100 шт", "№10", "стерильный", "1 шт", "0,9%"),
    "general": ("1 шт", "10 шт", "упак.", "компл.", "набор", "1 кг"),
}  # fmt: skip

# Family of an ОКПД2 division (first two digits of the code).
_DIVISION_FAMILIES: tuple[tuple[range, str], ...] = (
    (range(1, 4), "food"),
    (range(10, 13), "food"),
    (range(5, 10), "building"),
    (range(13, 16), "textile"),
    (range(16, 17), "building"),
    (range(17, 19), "paper"),
    (range(19, 23), "chemical"),
    (range(23, 26), "building"),
    (range(26, 27), "electronics"),
    (range(27, 28), "electrical"),
    (range(28, 29), "machinery"),
    (range(29, 31), "vehicle"),
)
_MEDICAL_PREFIXES = ("21.", "32.5")

# Units and specs of services in price lists, by the kind of work (renovation, transport, repair …).
SERVICE_SPECS: dict[str, tuple[str, ...]] = {
    "area": ("за 1 м2", ", м2", "1 м2", ", п.м.", "за 1 п.м.", "под ключ", "(1 ед.)"),
    "transport": ("за 1 км", "1 сутки", "1 час", ", час", "за рейс", "(1 ед.)"),
    "general": (
        "за 1 шт.", ", шт", "(1 ед.)", "1 час", ", час", "(1 точка)", "за выезд", "(комплекс)", "1 ед.",
    ),
}  # fmt: skip
_AREA_WORK = (
    "монтаж", "демонтаж", "укладка", "покраска", "окраска", "отделка", "уборка", "химическая чистка",
)  # fmt: skip
_TRANSPORT_WORK = ("перевозка", "доставка", "аренда", "прокат")
PRICES: tuple[str, ...] = ("{} руб.", "{} ₽", "— {} р.", "от {} руб.", "цена {} руб.")

PROCUREMENT_CUSTOMERS: tuple[str, ...] = (
    "ГБУЗ «Городская больница № {n}»", "МБОУ СОШ № {n}", "учреждения", "администрации", "ФГБУ «{brand}»",
    "МКУ «{brand}»", "АО «{brand}»", "филиала № {n}", "ГАУ «{brand}»",
)  # fmt: skip
PROCUREMENT_SUFFIXES: tuple[str, ...] = (
    "для нужд {customer}", "на {year} год", "в {year} году", "(лот № {n})", "для обеспечения нужд {customer}",
    "на {year}-{year2} гг.",
)  # fmt: skip


def family_of(code: str) -> str:
    """The goods family of an ОКПД2 code ("general" when no family fits)."""
    if code.startswith(_MEDICAL_PREFIXES):
        return "medical"
    try:
        division = int(code[:2])
    except ValueError:
        return "general"
    return next((family for divisions, family in _DIVISION_FAMILIES if division in divisions), "general")


def brand(rng: random.Random) -> str:
    """A made-up brand: two or three Latin syllables ("Veltor") or a Cyrillic stem + ending ("Агродом")."""
    if rng.random() < 0.5:
        word = "".join(rng.choice(LATIN_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
        return word.upper() if len(word) <= 5 and rng.random() < 0.3 else word.capitalize()
    word = rng.choice(CYRILLIC_SYLLABLES) + rng.choice(CYRILLIC_SYLLABLES + CYRILLIC_ENDINGS)
    return word.capitalize()


def model_code(rng: random.Random) -> str:
    """A Latin model code: "CF226X", "XR-200", "K12", "TM-3040S"."""
    letters = "".join(rng.choice(MODEL_LETTERS) for _ in range(rng.choice((1, 2, 2, 3))))
    digits = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(rng.choice((1, 2, 3))))
    suffix = rng.choice(("", "", "", rng.choice(MODEL_LETTERS), rng.choice(MODEL_LETTERS) * 2))
    separator = rng.choice(("", "", "-", " "))
    return letters + separator + digits + suffix


def article(rng: random.Random) -> str:
    """An article number: "арт. 4607001234", "арт. AB-1234", "код 000123"."""
    kind = rng.randrange(3)
    if kind == 0:
        return "арт. " + "".join(str(rng.randint(0, 9)) for _ in range(rng.choice((6, 8, 10))))
    if kind == 1:
        return f"арт. {rng.choice(MODEL_LETTERS)}{rng.choice(MODEL_LETTERS)}-{rng.randint(100, 9999)}"
    return f"код {rng.randint(1, 999999):06d}"


def price(rng: random.Random) -> str:
    value = rng.choice((rng.randint(1, 99) * 10, rng.randint(1, 300) * 50, rng.randint(100, 99999)))
    text = f"{value:,}".replace(",", " ") if value >= 10000 else str(value)
    return rng.choice(PRICES).format(text)


_LIQUID_STEMS = (
    "молок", "сок", "напит", "вод", "масл", "сливк", "кефир", "вин", "пив", "водк", "сироп", "нектар",
)  # fmt: skip


def goods_spec(rng: random.Random, family: str, name: str = "") -> str:
    """A pack size or spec of the goods family; liquid foods get volumes and fat percentages."""
    if family == "food" and any(word.startswith(_LIQUID_STEMS) for word in name.lower().split()):
        family = "food_liquid"
    return rng.choice(FAMILY_SPECS.get(family, FAMILY_SPECS["general"]))


def service_spec(rng: random.Random, activity: str) -> str:
    """A unit fitting the activity: "за 1 м2" for renovation, "за 1 км" for transport, "за 1 шт." …"""
    activity = activity.lower()
    kind = "area" if activity.startswith(_AREA_WORK) else "general"
    kind = "transport" if activity.startswith(_TRANSPORT_WORK) else kind
    return rng.choice(SERVICE_SPECS[kind])


def procurement_suffix(rng: random.Random) -> str:
    """ "для нужд ГБУЗ «Городская больница № 5»", "на 2025 год", "(лот № 3)" …"""
    year = rng.randint(2019, 2027)
    customer = rng.choice(PROCUREMENT_CUSTOMERS).format(n=rng.randint(1, 120), brand=brand(rng))
    template = rng.choice(PROCUREMENT_SUFFIXES)
    return template.format(customer=customer, year=year, year2=year + 1, n=rng.randint(1, 12))


def join_spec(name: str, spec: str) -> str:
    """Append a spec; specs starting with a comma attach without a space ("Укладка плитки, м2")."""
    return name + spec if spec.startswith(",") else f"{name} {spec}"
