"""Correction data for the model-lifecycle tests: deterministic, fast, real names.

- `wrong_slice`: waste and rubbish removal services ("Вывоз строительного мусора с объекта", "Погрузка и
  вывоз снега на полигон"...) that a model trained on the bundled ОКПД2 data labels as products: the
  bundled data has the objects (мусор, снег, металлолом, мебель...) as goods and hardly any "вывоз"
  services, so the object outweighs the verb. Items are generated from templates, scored with the given
  classifier, and only the ones it gets wrong are returned: correcting them is what retraining is for, and
  a challenger that learnt the family gets the held-back ones right.
- `adversarial_corrections`: product names of the bundled file (ОКПД2 goods) "corrected" to service:
  training on many of them makes a model clearly worse on the reference data.
"""

from __future__ import annotations

import csv
import random
from functools import cache
from typing import Any

from models.classifier import Classifier
from models.datasets.builder import DEFAULT_SOURCE

SERVICE, PRODUCT = "service", "product"

_REMOVAL = (
    "Вывоз",
    "Вывоз и утилизация",
    "Погрузка и вывоз",
    "Сбор и вывоз",
    "Вывоз и размещение",
    "Транспортирование",
    "Демонтаж и вывоз",
)
_OBJECTS = (
    "мусора",
    "строительного мусора",
    "снега",
    "веток",
    "металлолома",
    "старой мебели",
    "грунта",
    "листвы",
    "крупногабаритного мусора",
    "твердых коммунальных отходов",
    "ТКО",
    "ТБО",
    "бытовой техники",
    "автомобильных шин",
    "ртутьсодержащих ламп",
    "порубочных остатков",
    "оргтехники",
    "медицинских отходов",
    "древесных отходов",
    "осадка сточных вод",
    "отработанного масла",
    "аккумуляторов",
    "боя стекла",
    "опилок",
    "навоза",
    "макулатуры",
    "пластиковой тары",
    "асфальтовой крошки",
    "бетонного лома",
    "кирпичного боя",
    "ила",
    "пищевых отходов",
    "смета с дорог",
    "строительных отходов",
    "электронного лома",
    "поддонов",
)
_PLACES = (
    "",
    " с территории заказчика",
    " на полигон",
    " контейнером 8 м3",
    " с объекта",
    " самосвалом",
    " с площадки",
    " бункером 27 м3",
    " с территории школы",
    " на переработку",
    " из подвала",
    " контейнером 20 м3",
    " с кровли",
    " грузовиком",
    " со двора",
    " на утилизацию",
)
_DETAILS = ("по заявке заказчика", "1 рейс", "ежемесячно", "г. Казань", "г. Тверь", "объект 2")


@cache
def _removal_names() -> tuple[str, ...]:
    return tuple(f"{head} {obj}{place}" for head in _REMOVAL for obj in _OBJECTS for place in _PLACES)


def wrong_slice(classifier: Classifier, n: int, seed: int, prefix: str = "wrong") -> list[dict[str, Any]]:
    """`n` removal services (dicts: id, name, full_name, label='service') that `classifier` labels as
    products, in a seeded order; ids ``<prefix>-<seed>-<nnnn>`` (unique within a call, the same for the
    same arguments). ValueError when the classifier gets fewer than `n` of the family wrong."""
    names = list(_removal_names())
    random.Random(seed).shuffle(names)
    rng = random.Random(seed + 1)
    candidates = [{"name": name, "full_name": f"{name}, {rng.choice(_DETAILS)}"} for name in names]
    wrong: list[dict[str, Any]] = []
    for start in range(0, len(candidates), 500):
        batch = candidates[start : start + 500]
        for item, prediction in zip(batch, classifier.predict(batch, top_k=1, explain=0), strict=True):
            if prediction.label != SERVICE:
                wrong.append({"id": f"{prefix}-{seed}-{len(wrong):04d}", **item, "label": SERVICE})
                if len(wrong) == n:
                    return wrong
    raise ValueError(
        f"{classifier.version} gets only {len(wrong)} of {len(candidates)} removal services wrong, {n} wanted"
    )


@cache
def _bundled_products() -> tuple[str, ...]:
    with DEFAULT_SOURCE.open(encoding="utf-8", newline="") as handle:
        names = {row["name"].strip() for row in csv.DictReader(handle) if row["label"].strip() == PRODUCT}
    return tuple(sorted(name for name in names if name))


def adversarial_corrections(n: int, seed: int, prefix: str = "adv") -> list[dict[str, Any]]:
    """`n` distinct product names of the bundled ОКПД2 file, "corrected" to service (dicts: id, name,
    full_name=None, label='service'), a seeded sample; ids ``<prefix>-<seed>-<nnnn>``."""
    names = random.Random(seed).sample(_bundled_products(), n)
    return [
        {"id": f"{prefix}-{seed}-{index:04d}", "name": name, "full_name": None, "label": SERVICE}
        for index, name in enumerate(names)
    ]
