from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.pipeline import validation
from streams.pipeline.codes import CodeLists, load_code_lists, read_code_lists
from streams.pipeline.validation import (
    ERROR_CODES,
    FIELDS,
    WARNING_CODES,
    Issue,
    ValidationResult,
    Validator,
    content_hash,
)
from streams.settings import Settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SCHEMA = Path(__file__).parents[1] / "schemas" / "nomenclature_item.avsc"
OPTIONAL_TEXTS = ("kind", "unit", "type_hint", "region", "source")


@pytest.fixture(scope="module")
def codes() -> CodeLists:
    return load_code_lists()


@pytest.fixture(scope="module")
def validator(codes: CodeLists) -> Validator:
    return Validator(codes, max_name_length=1000, max_full_name_length=4000, now=lambda: NOW)


def good(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "item-1",
        "name": "Картридж HP CF226X",
        "full_name": "Картридж лазерный HP CF226X, чёрный",
        "kind": "Товар",
        "unit": "шт",
        "type_hint": "Расходные материалы",
        "okved_code": "46.66",
        "hs_code": "8443999000",
        "country": "CN",
        "region": "77",
        "source": "1C",
        "created_at": datetime(2024, 5, 1, 10, 30, tzinfo=UTC),
        "label": "product",
    }
    item.update(changes)
    return item


def errors(result: ValidationResult) -> list[tuple[str, str]]:
    return [(issue.field, issue.code) for issue in result.errors]


def warnings(result: ValidationResult) -> list[tuple[str, str]]:
    return [(issue.field, issue.code) for issue in result.warnings]


def only_error(result: ValidationResult) -> Issue:
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def test_good_item_passes_unchanged(validator: Validator) -> None:
    result = validator.validate(good(), key="item-1")
    assert result.ok
    assert result.errors == [] and result.warnings == []
    assert result.item == good()


# --- id ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "word"), [(None, "null"), ("", "blank"), ("   ", "blank")])
def test_id_required(validator: Validator, value: str | None, word: str) -> None:
    issue = only_error(validator.validate(good(id=value)))
    assert (issue.field, issue.code) == ("id", "required")
    assert word in issue.message


def test_id_too_long(validator: Validator) -> None:
    assert validator.validate(good(id="x" * 200)).ok
    issue = only_error(validator.validate(good(id="x" * 201)))
    assert (issue.field, issue.code) == ("id", "too_long")
    assert "201" in issue.message and "200" in issue.message


def test_id_must_equal_key(validator: Validator) -> None:
    assert validator.validate(good(id="a"), key="a").ok
    assert validator.validate(good(id="a"), key=None).ok
    issue = only_error(validator.validate(good(id="a"), key="b"))
    assert (issue.field, issue.code) == ("id", "key_mismatch")
    assert "'a'" in issue.message and "'b'" in issue.message


def test_id_is_not_trimmed(validator: Validator) -> None:
    result = validator.validate(good(id=" a "), key=" a ")
    assert result.ok and result.item["id"] == " a "


def test_id_wrong_type(validator: Validator) -> None:
    assert errors(validator.validate(good(id=42))) == [("id", "wrong_type")]


# --- name and full_name -----------------------------------------------------------------------------

NAMES = pytest.mark.parametrize("field", ["name", "full_name"])


@NAMES
def test_name_required_when_null(validator: Validator, field: str) -> None:
    result = validator.validate(good(**{field: None}))
    assert errors(result) == [(field, "required")]
    assert field in result.errors[0].message


@NAMES
def test_name_blank(validator: Validator, field: str) -> None:
    for value in ("", "   ", "\t\n", "\u00a0"):
        assert errors(validator.validate(good(**{field: value}))) == [(field, "blank")], repr(value)


@NAMES
def test_name_too_long(validator: Validator, field: str) -> None:
    limit = 1000 if field == "name" else 4000
    assert validator.validate(good(**{field: "я" * limit})).ok
    issue = only_error(validator.validate(good(**{field: "я" * (limit + 1)})))
    assert (issue.field, issue.code) == (field, "too_long")
    assert f"{limit + 1} characters" in issue.message and f"limit {limit}" in issue.message


def test_name_limits_come_from_the_constructor(codes: CodeLists) -> None:
    small = Validator(codes, max_name_length=5, max_full_name_length=8, now=lambda: NOW)
    assert small.validate(good(name="Болт", full_name="Болт М8")).ok
    assert errors(small.validate(good(name="Болт М8", full_name="Болт М8 оцинкованный"))) == [
        ("name", "too_long"), ("full_name", "too_long")]


def test_name_length_is_measured_after_collapsing_whitespace(codes: CodeLists) -> None:
    small = Validator(codes, max_name_length=5, max_full_name_length=100, now=lambda: NOW)
    assert small.validate(good(name="  Бо   лт  ")).ok


@NAMES
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x9b"])
def test_name_control_chars(validator: Validator, field: str, char: str) -> None:
    issue = only_error(validator.validate(good(**{field: f"Болт{char}М8"})))
    assert (issue.field, issue.code) == (field, "control_chars")
    assert f"U+{ord(char):04X}" in issue.message and "position 4" in issue.message


@NAMES
def test_name_tab_and_line_breaks_are_allowed(validator: Validator, field: str) -> None:
    result = validator.validate(good(**{field: "Болт\tМ8\r\nоцинкованный\n"}))
    assert result.ok
    assert result.item[field] == "Болт М8 оцинкованный"


@NAMES
def test_name_replacement_char(validator: Validator, field: str) -> None:
    issue = only_error(validator.validate(good(**{field: "Б\ufffd\ufffdт М8"})))
    assert (issue.field, issue.code) == (field, "replacement_char")
    assert "U+FFFD" in issue.message


@NAMES
@pytest.mark.parametrize("value", ["12345", "---", "1.5 / 2,0", "№ 12", "(*)"])
def test_name_without_letters(validator: Validator, field: str, value: str) -> None:
    issue = only_error(validator.validate(good(**{field: value})))
    assert (issue.field, issue.code) == (field, "no_letters")
    assert repr(value) in issue.message


@NAMES
@pytest.mark.parametrize("value", ["1C", "5 кг", "M8", "Ёлка 🎄"])
def test_name_with_any_letter_passes(validator: Validator, field: str, value: str) -> None:
    assert validator.validate(good(**{field: value})).ok


# --- UTF-8 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "name", "full_name", *OPTIONAL_TEXTS, "okved_code", "hs_code",
                                   "country", "label"])
def test_lone_surrogate_is_invalid_utf8(validator: Validator, field: str) -> None:
    value = "ab\ud800"
    result = validator.validate(good(**{field: value}), key=value if field == "id" else None)
    issue = only_error(result)
    assert (issue.field, issue.code) == (field, "invalid_utf8")
    assert "U+D800" in issue.message and "position 2" in issue.message


def test_astral_characters_are_valid_utf8(validator: Validator) -> None:
    assert validator.validate(good(name="Ёлка 🎄", kind="𝐓овар")).ok


# --- okved_code -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cleaned"), [
    ("62.01", "62.01"), ("62", "62"), ("62.0", "62.0"), ("62.02.1", "62.02.1"), ("01.11.11", "01.11.11"),
    (" 62,01 ", "62.01"), ("", None), ("  ", None), (None, None),
])
def test_okved_valid(validator: Validator, value: str | None, cleaned: str | None) -> None:
    result = validator.validate(good(okved_code=value))
    assert result.ok, result.errors
    assert result.item["okved_code"] == cleaned


@pytest.mark.parametrize("value", ["6201", "62.", "62.011", "62.01.1.1", "J", "62 01", "٦٢.٠١", "6.2"])
def test_okved_malformed(validator: Validator, value: str) -> None:
    issue = only_error(validator.validate(good(okved_code=value)))
    assert (issue.field, issue.code) == ("okved_code", "okved_malformed")
    assert repr(value) in issue.message


@pytest.mark.parametrize("value", ["99.99", "62.05", "00", "62.01.9"])
def test_okved_unknown(validator: Validator, value: str) -> None:
    issue = only_error(validator.validate(good(okved_code=value)))
    assert (issue.field, issue.code) == ("okved_code", "okved_unknown")
    assert repr(value) in issue.message


# --- hs_code ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cleaned"), [
    ("85", "85"), ("8517", "8517"), ("851762", "851762"), ("84439990", "84439990"),
    ("8443999000", "8443999000"), ("8443 99 900 0", "8443999000"), ("8443.99.900.0", "8443999000"),
    ("", None), (" ", None), (None, None),
])
def test_hs_valid(validator: Validator, value: str | None, cleaned: str | None) -> None:
    result = validator.validate(good(hs_code=value))
    assert result.ok and not result.warnings, (result.errors, result.warnings)
    assert result.item["hs_code"] == cleaned


@pytest.mark.parametrize("value", ["8", "851", "85176", "85A7", "84439990001", "8443-99", "٨٥", "."])
def test_hs_malformed(validator: Validator, value: str) -> None:
    issue = only_error(validator.validate(good(hs_code=value)))
    assert (issue.field, issue.code) == ("hs_code", "hs_malformed")
    assert repr(value) in issue.message


@pytest.mark.parametrize("value", ["77", "7701", "9800000000", "00"])
def test_hs_unknown_chapter_is_an_error(validator: Validator, value: str) -> None:
    result = validator.validate(good(hs_code=value))
    assert errors(result) == [("hs_code", "hs_unknown_chapter")]
    assert f"'{value[:2]}'" in result.errors[0].message
    assert result.warnings == []


@pytest.mark.parametrize("value", ["8534", "853400", "8534000000", "2927000000"])
def test_hs_unknown_heading_is_a_warning(validator: Validator, value: str) -> None:
    result = validator.validate(good(hs_code=value))
    assert result.ok
    assert warnings(result) == [("hs_code", "hs_unknown_heading")]
    assert f"'{value[:4]}'" in result.warnings[0].message


def test_hs_unknown_subposition_is_a_warning(validator: Validator, codes: CodeLists) -> None:
    value = "8443999999"
    assert value[:4] in codes.hs_headings and value not in codes.hs_subpositions
    result = validator.validate(good(hs_code=value))
    assert result.ok
    assert warnings(result) == [("hs_code", "hs_unknown_subposition")]
    assert repr(value) in result.warnings[0].message


# --- country ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cleaned"), [("RU", "RU"), (" ru ", "RU"), ("Cn", "CN"), ("", None)])
def test_country_valid(validator: Validator, value: str, cleaned: str | None) -> None:
    result = validator.validate(good(country=value))
    assert result.ok
    assert result.item["country"] == cleaned


@pytest.mark.parametrize(("value", "hint"), [
    ("RUS", "alpha-3 code of Russian Federation, use 'RU'"),
    ("rus", "alpha-3 code of Russian Federation, use 'RU'"),
    ("643", "numeric code of Russian Federation, use 'RU'"),
    ("Germany", "name of Germany, use 'DE'"),
])
def test_country_unknown_with_suggestion(validator: Validator, value: str, hint: str) -> None:
    issue = only_error(validator.validate(good(country=value)))
    assert (issue.field, issue.code) == ("country", "country_unknown")
    assert repr(value) in issue.message and hint in issue.message


@pytest.mark.parametrize("value", ["XX", "XK", "R", "Россия"])
def test_country_unknown_without_suggestion(validator: Validator, value: str) -> None:
    issue = only_error(validator.validate(good(country=value)))
    assert (issue.field, issue.code) == ("country", "country_unknown")
    assert "use" not in issue.message


# --- label ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cleaned"), [
    ("product", "product"), ("service", "service"), (" Service ", "service"), ("PRODUCT", "product"),
    ("", None), (None, None),
])
def test_label_valid(validator: Validator, value: str | None, cleaned: str | None) -> None:
    result = validator.validate(good(label=value))
    assert result.ok
    assert result.item["label"] == cleaned


@pytest.mark.parametrize("value", ["goods", "товар", "services", "product/service"])
def test_label_invalid(validator: Validator, value: str) -> None:
    issue = only_error(validator.validate(good(label=value)))
    assert (issue.field, issue.code) == ("label", "label_invalid")
    assert repr(value) in issue.message


# --- created_at -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    None, NOW, NOW + timedelta(hours=23), datetime(1990, 1, 1, tzinfo=UTC), datetime(2020, 1, 1),
])
def test_created_at_valid(validator: Validator, value: datetime | None) -> None:
    result = validator.validate(good(created_at=value))
    assert result.ok and not result.warnings


def test_created_at_in_the_future_is_a_warning(validator: Validator) -> None:
    result = validator.validate(good(created_at=NOW + timedelta(days=2)))
    assert result.ok
    assert warnings(result) == [("created_at", "created_at_future")]
    assert "2026-11-24" in result.warnings[0].message


def test_created_at_before_1990_is_a_warning(validator: Validator) -> None:
    result = validator.validate(good(created_at=datetime(1989, 12, 31, 23, 59, tzinfo=UTC)))
    assert result.ok
    assert warnings(result) == [("created_at", "created_at_implausible")]
    assert "1989-12-31" in result.warnings[0].message


def test_created_at_naive_is_taken_as_utc(validator: Validator) -> None:
    result = validator.validate(good(created_at=datetime(2024, 5, 1, 10, 30)))
    assert result.item["created_at"] == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert result.item["created_at"].tzinfo is not None


def test_created_at_wrong_type(validator: Validator) -> None:
    assert errors(validator.validate(good(created_at=1714559400000))) == [("created_at", "wrong_type")]
    assert errors(validator.validate(good(created_at="2024-05-01"))) == [("created_at", "wrong_type")]


def test_default_clock_is_the_real_time(codes: CodeLists) -> None:
    real = Validator(codes, 1000, 4000)
    assert real.validate(good(created_at=datetime.now(UTC))).warnings == []
    future = real.validate(good(created_at=datetime.now(UTC) + timedelta(days=3)))
    assert warnings(future) == [("created_at", "created_at_future")]


# --- other optional strings -------------------------------------------------------------------------


@pytest.mark.parametrize("field", OPTIONAL_TEXTS)
def test_optional_text_too_long(validator: Validator, field: str) -> None:
    assert validator.validate(good(**{field: "ж" * 200})).ok
    issue = only_error(validator.validate(good(**{field: "ж" * 201})))
    assert (issue.field, issue.code) == (field, "too_long")
    assert "201 characters" in issue.message and "limit 200" in issue.message


@pytest.mark.parametrize("field", OPTIONAL_TEXTS)
def test_optional_text_is_trimmed_and_empty_becomes_none(validator: Validator, field: str) -> None:
    assert validator.validate(good(**{field: "  усл.  ед. "})).item[field] == "усл.  ед."
    for value in ("", "   ", None):
        result = validator.validate(good(**{field: value}))
        assert result.ok and result.item[field] is None


@pytest.mark.parametrize("field", OPTIONAL_TEXTS)
def test_optional_text_wrong_type(validator: Validator, field: str) -> None:
    issue = only_error(validator.validate(good(**{field: 5})))
    assert (issue.field, issue.code) == (field, "wrong_type")
    assert "int" in issue.message


# --- the record as a whole --------------------------------------------------------------------------


def test_all_errors_are_collected_at_once(validator: Validator) -> None:
    bad = good(id="a", name=None, full_name="   ", unit="u" * 300, okved_code="99.99", hs_code="77",
               country="RUS", label="goods", created_at=NOW + timedelta(days=30))
    result = validator.validate(bad, key="b")
    assert not result.ok
    assert errors(result) == [
        ("id", "key_mismatch"), ("name", "required"), ("full_name", "blank"), ("unit", "too_long"),
        ("okved_code", "okved_unknown"), ("hs_code", "hs_unknown_chapter"), ("country", "country_unknown"),
        ("label", "label_invalid"),
    ]
    assert warnings(result) == [("created_at", "created_at_future")]
    assert {code for _, code in errors(result) + warnings(result)} <= ERROR_CODES.keys()


def test_several_findings_on_one_name(validator: Validator) -> None:
    result = validator.validate(good(name="12\x07\ufffd" + "3" * 1000))
    assert sorted(errors(result)) == [("name", code) for code in
                                      ("control_chars", "no_letters", "replacement_char", "too_long")]


def test_cleaned_item_trims_and_collapses(validator: Validator) -> None:
    raw = good(name="  Ремонт \t  кровли  ", full_name="\u00a0Ремонт\n\nкровли   здания ", kind=" Услуга ",
               okved_code=" 43,91 ", hs_code=" 85 17 ", country=" ru ", label=" Service ")
    snapshot = dict(raw)
    result = validator.validate(raw)
    assert result.ok
    assert result.item == good(name="Ремонт кровли", full_name="Ремонт кровли здания", kind="Услуга",
                               okved_code="43.91", hs_code="8517", country="RU", label="service")
    assert raw == snapshot  # the input is not modified


def test_cleaned_item_has_exactly_the_schema_fields(validator: Validator) -> None:
    result = validator.validate({"id": "x", "name": "Болт", "full_name": "Болт М8", "extra": 1})
    assert result.ok
    assert list(result.item) == list(FIELDS)
    assert all(result.item[name] is None for name in FIELDS if name not in {"id", "name", "full_name"})


def test_fields_match_the_avro_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert tuple(field["name"] for field in schema["fields"]) == FIELDS


def test_long_values_are_truncated_in_messages(validator: Validator) -> None:
    issue = only_error(validator.validate(good(label="x" * 5000)))
    assert issue.code == "label_invalid"
    assert "x" * 80 + "'…" in issue.message and "x" * 81 not in issue.message
    assert len(issue.message) < 200


def test_issue_as_dict() -> None:
    assert Issue("name", "blank", "m").as_dict() == {"field": "name", "code": "blank", "message": "m"}


def test_from_settings_uses_the_limits(codes: CodeLists) -> None:
    v = Validator.from_settings(Settings(max_name_length=3, max_full_name_length=4000), codes)
    assert errors(v.validate(good(name="Болт"))) == [("name", "too_long")]


# --- the codes reference ----------------------------------------------------------------------------


def docstring_table() -> list[list[str]]:
    lines = (validation.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+(  =+)+", line)]
    assert len(rules) == 3
    return [re.split(r"\s{2,}", line) for line in lines[rules[1] + 1:rules[2]]]


def test_docstring_table_matches_error_codes() -> None:
    table = docstring_table()
    assert {row[0]: row[3] for row in table} == ERROR_CODES
    assert {row[0] for row in table if row[2] == "warning"} == WARNING_CODES
    assert {row[2] for row in table} == {"error", "warning"}


# --- content_hash -----------------------------------------------------------------------------------


def test_content_hash_is_stable_for_identical_content(validator: Validator) -> None:
    item = validator.validate(good()).item
    same = dict(reversed(list(item.items())))
    assert content_hash(item) == content_hash(same)
    assert re.fullmatch(r"[0-9a-f]{32}", content_hash(item))
    assert content_hash(validator.validate(good(name="  Картридж   HP CF226X ")).item) == content_hash(item)


def test_content_hash_null_and_missing_fields_hash_alike() -> None:
    with_null = {"id": "a", "name": "Болт", "kind": None}
    assert content_hash(with_null) == content_hash({"id": "a", "name": "Болт"})


def test_content_hash_naive_datetime_is_utc() -> None:
    assert content_hash({"created_at": datetime(2024, 1, 1)}) == content_hash(
        {"created_at": datetime(2024, 1, 1, tzinfo=UTC)})
    assert content_hash({"created_at": datetime(2024, 1, 1, 3, tzinfo=UTC)}) != content_hash(
        {"created_at": datetime(2024, 1, 1, 3, 0, 0, 1000, tzinfo=UTC)})


@pytest.mark.parametrize("field", FIELDS)
def test_content_hash_changes_with_any_field(field: str) -> None:
    item = good()
    changed = dict(item)
    changed[field] = item[field] + timedelta(seconds=1) if field == "created_at" else item[field] + "x"
    assert content_hash(changed) != content_hash(item)
    assert content_hash({**item, field: None}) != content_hash(item)


def test_content_hash_rejects_unhashable_values() -> None:
    with pytest.raises(TypeError):
        content_hash({"x": object()})


# --- the real code lists ----------------------------------------------------------------------------


def test_code_lists_sanity(codes: CodeLists, validator: Validator) -> None:
    assert load_code_lists() is codes  # cached
    assert "62.01" in codes.okved_codes and codes.okved_section_of["62.01"] == "J"
    assert "99.99" not in codes.okved_codes
    assert codes.okved_sections == frozenset("ABCDEFGHIJKLMNOPQRSTU")
    assert "85" in codes.hs_chapters and "8517" in codes.hs_headings
    assert all(len(code) == 10 and code.isdigit() for code in codes.hs_subpositions)
    assert "RU" in codes.country_alpha2 and codes.country_alpha3["RUS"] == "RU"
    assert codes.country_numeric["020"] == "AD"
    # the row counts recorded in streams/pipeline/codes/PROVENANCE.md
    assert (len(codes.okved_codes), len(codes.hs_chapters), len(codes.hs_headings),
            len(codes.hs_subpositions), len(codes.country_alpha2)) == (2878, 97, 957, 12715, 249)

    assert validator.validate(good(okved_code="62.01")).ok
    assert errors(validator.validate(good(okved_code="99.99"))) == [("okved_code", "okved_unknown")]
    assert validator.validate(good(hs_code="85")).ok
    assert validator.validate(good(country="RU")).ok
    rus = only_error(validator.validate(good(country="RUS")))
    assert rus.code == "country_unknown" and "'RU'" in rus.message


def test_read_code_lists_rejects_unexpected_columns(tmp_path: Path) -> None:
    source = Path(validation.__file__).parent / "codes"
    for name in ("okved2_codes.csv", "tnved_codes.csv", "iso3166_1.csv"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    assert read_code_lists(tmp_path).hs_chapters == load_code_lists().hs_chapters
    (tmp_path / "tnved_codes.csv").write_text("kind,code\nchapter,01\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected columns"):
        read_code_lists(tmp_path)
