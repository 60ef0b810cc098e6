"""Official code lists used to validate codes in records: ОКВЭД2, ТН ВЭД ЕАЭС (HS) and ISO 3166-1.

The CSVs live in ``streams/pipeline/codes/``; ``streams/pipeline/codes/PROVENANCE.md`` says where they come
from.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CODES_DIR = Path(__file__).parent / "codes"

OKVED_FILE = "okved2_codes.csv"
TNVED_FILE = "tnved_codes.csv"
ISO3166_FILE = "iso3166_1.csv"


@dataclass(frozen=True)
class CodeLists:
    """Sets for O(1) membership tests; all codes are plain strings as written in the lists."""

    okved_codes: frozenset[str]
    """ОКВЭД2 codes at every level: '62', '62.0', '62.01', '62.02.1' …"""
    okved_sections: frozenset[str]
    """Section letters A..U."""
    okved_section_of: dict[str, str]
    """ОКВЭД2 code -> its section letter."""
    hs_chapters: frozenset[str]
    """2-digit ТН ВЭД chapters."""
    hs_headings: frozenset[str]
    """4-digit headings that have subdivisions (headings without any are missing from the source)."""
    hs_subpositions: frozenset[str]
    """10-digit subpositions, 2022 edition."""
    country_alpha2: frozenset[str]
    """ISO 3166-1 alpha-2 codes."""
    country_alpha3: dict[str, str]
    """ISO 3166-1 alpha-3 code -> alpha-2 code."""
    country_numeric: dict[str, str]
    """ISO 3166-1 numeric code ('643') -> alpha-2 code."""
    country_names: dict[str, str]
    """Alpha-2 code -> English short name."""


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != columns:
            raise ValueError(f"{path}: expected columns {columns}, found {reader.fieldnames}")
        for row in reader:
            yield {key: (value or "").strip() for key, value in row.items()}


def read_code_lists(directory: Path = CODES_DIR) -> CodeLists:
    """Read the three CSVs from ``directory`` (uncached; ``load_code_lists`` is the cached entry point)."""
    sections: set[str] = set()
    section_of: dict[str, str] = {}
    for row in _rows(directory / OKVED_FILE, ("section", "code")):
        sections.add(row["section"])
        if row["code"]:  # section rows have an empty code
            section_of[row["code"]] = row["section"]

    hs: dict[str, set[str]] = {"chapter": set(), "heading": set(), "subposition": set()}
    for row in _rows(directory / TNVED_FILE, ("level", "code")):
        if row["level"] not in hs:
            raise ValueError(f"{directory / TNVED_FILE}: unknown level {row['level']!r}")
        hs[row["level"]].add(row["code"])

    alpha3: dict[str, str] = {}
    numeric: dict[str, str] = {}
    names: dict[str, str] = {}
    for row in _rows(directory / ISO3166_FILE, ("alpha_2", "alpha_3", "numeric", "name")):
        alpha3[row["alpha_3"]] = row["alpha_2"]
        numeric[row["numeric"]] = row["alpha_2"]
        names[row["alpha_2"]] = row["name"]

    lists = CodeLists(
        okved_codes=frozenset(section_of),
        okved_sections=frozenset(sections),
        okved_section_of=section_of,
        hs_chapters=frozenset(hs["chapter"]),
        hs_headings=frozenset(hs["heading"]),
        hs_subpositions=frozenset(hs["subposition"]),
        country_alpha2=frozenset(names),
        country_alpha3=alpha3,
        country_numeric=numeric,
        country_names=names,
    )
    empty = [name for name, value in vars(lists).items() if not value]
    if empty:
        raise ValueError(f"{directory}: empty code lists: {', '.join(empty)}")
    return lists


@functools.cache
def load_code_lists() -> CodeLists:
    """The packaged code lists, read once per process."""
    return read_code_lists(CODES_DIR)
