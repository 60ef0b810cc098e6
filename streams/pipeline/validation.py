"""Validation and cleaning of nomenclature items (``schemas/nomenclature_item.avsc``).

``Validator.validate`` checks every field, collects all findings (it does not stop at the first) and
returns a cleaned copy of the item. A record with errors is refused (dead-letter topic); warnings travel
with the classified item. Each finding is an ``Issue(field, code, message)``; the codes are stable:

======================  ================================  =======  ==========================================
code                    field                             level    meaning
======================  ================================  =======  ==========================================
required                id, name, full_name               error    missing (null); for id also blank
blank                   name, full_name                   error    only whitespace
too_long                id, name, full_name, other texts  error    longer than its limit
key_mismatch            id                                error    id differs from the record key
wrong_type              any                               error    not a string (created_at: not a datetime)
invalid_utf8            any string                        error    lone surrogate: cannot be encoded as UTF-8
control_chars           name, full_name                   error    control character other than tab, LF, CR
replacement_char        name, full_name                   error    U+FFFD: the text was broken upstream
no_letters              name, full_name                   error    only digits, punctuation or symbols
okved_malformed         okved_code                        error    not shaped like 62, 62.0, 62.01 or 62.01.1
okved_unknown           okved_code                        error    well-formed but not in ОКВЭД2
hs_malformed            hs_code                           error    not 2, 4, 6, 8 or 10 digits
hs_unknown_chapter      hs_code                           error    first 2 digits are not a ТН ВЭД chapter
hs_unknown_heading      hs_code                           warning  first 4 digits not in the heading list
hs_unknown_subposition  hs_code                           warning  10-digit code not in the subposition list
country_unknown         country                           error    not an ISO 3166-1 alpha-2 code
label_invalid           label                             error    not 'product' or 'service'
created_at_future       created_at                        warning  more than 1 day in the future
created_at_implausible  created_at                        warning  before 1990-01-01
======================  ================================  =======  ==========================================

*Other texts* are kind, unit, type_hint, region and source. Limits: id and other texts 200 characters;
name and full_name ``max_name_length`` and ``max_full_name_length`` from the settings (default 1000 and
4000), measured after cleaning. ``ERROR_CODES`` holds the meanings above, ``WARNING_CODES`` the warnings.

Cleaning (in ``ValidationResult.item``): every schema field is present (missing ones are None); name and
full_name are trimmed with internal whitespace runs collapsed to one space; other strings are trimmed and
become None when empty; okved_code uses '.' (not ','); hs_code is digits only; country is upper-case;
label is lower-case; a naive created_at is taken as UTC and made aware. id is never changed.

``content_hash`` digests a cleaned item to recognise re-deliveries with identical content.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from streams.pipeline.codes import CodeLists, load_code_lists

if TYPE_CHECKING:
    from streams.settings import Settings

ERROR_CODES: dict[str, str] = {
    "required": "missing (null); for id also blank",
    "blank": "only whitespace",
    "too_long": "longer than its limit",
    "key_mismatch": "id differs from the record key",
    "wrong_type": "not a string (created_at: not a datetime)",
    "invalid_utf8": "lone surrogate: cannot be encoded as UTF-8",
    "control_chars": "control character other than tab, LF, CR",
    "replacement_char": "U+FFFD: the text was broken upstream",
    "no_letters": "only digits, punctuation or symbols",
    "okved_malformed": "not shaped like 62, 62.0, 62.01 or 62.01.1",
    "okved_unknown": "well-formed but not in ОКВЭД2",
    "hs_malformed": "not 2, 4, 6, 8 or 10 digits",
    "hs_unknown_chapter": "first 2 digits are not a ТН ВЭД chapter",
    "hs_unknown_heading": "first 4 digits not in the heading list",
    "hs_unknown_subposition": "10-digit code not in the subposition list",
    "country_unknown": "not an ISO 3166-1 alpha-2 code",
    "label_invalid": "not 'product' or 'service'",
    "created_at_future": "more than 1 day in the future",
    "created_at_implausible": "before 1990-01-01",
}
"""Every code, errors and warnings, -> its meaning."""

WARNING_CODES: frozenset[str] = frozenset(
    {"hs_unknown_heading", "hs_unknown_subposition", "created_at_future", "created_at_implausible"}
)
"""Codes that are warnings: the item is still classified."""

FIELDS: tuple[str, ...] = (
    "id", "name", "full_name", "kind", "unit", "type_hint", "okved_code", "hs_code",
    "country", "region", "source", "created_at", "label",
)
"""Fields of the NomenclatureItem schema, in schema order."""

OPTIONAL_TEXT_FIELDS: tuple[str, ...] = ("kind", "unit", "type_hint", "region", "source")
MAX_ID_LENGTH = 200
MAX_OPTIONAL_LENGTH = 200
LABELS = frozenset({"product", "service"})
EARLIEST_CREATED_AT = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)
HS_LENGTHS = frozenset({2, 4, 6, 8, 10})
SHOWN_CHARS = 80

# Cc characters except \t \n \r (CRLF line breaks are common in full names from Windows sources).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_OKVED = re.compile(r"[0-9]{2}(?:\.[0-9]{1,2}){0,2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Issue:
    field: str
    """Field the finding is about; '' for the whole record."""
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The Avro ``nomenclature.Issue`` record."""
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass(slots=True)
class ValidationResult:
    item: dict[str, Any]
    """The cleaned item (see the module docstring); meaningful only when ``ok``."""
    errors: list[Issue]
    warnings: list[Issue]

    @property
    def ok(self) -> bool:
        return not self.errors


def _show(value: object) -> str:
    """The offending value for a message: repr, cut to about SHOWN_CHARS characters."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return repr(value[:SHOWN_CHARS]) + "…"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS + 2 else text[:SHOWN_CHARS] + "…"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Validator:
    """Checks and cleans items; cheap enough for the hot path (regexes compiled once, set lookups)."""

    __slots__ = ("_codes", "_country_by_name", "_max_full_name", "_max_name", "_now")

    def __init__(
        self,
        codes: CodeLists,
        max_name_length: int,
        max_full_name_length: int,
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._codes = codes
        self._max_name = max_name_length
        self._max_full_name = max_full_name_length
        self._now = now
        self._country_by_name = {name.casefold(): code for code, name in codes.country_names.items()}

    @classmethod
    def from_settings(cls, settings: Settings, codes: CodeLists | None = None) -> Validator:
        codes = codes if codes is not None else load_code_lists()
        return cls(codes, settings.max_name_length, settings.max_full_name_length)

    def validate(self, item: Mapping[str, Any], key: str | None = None) -> ValidationResult:
        """Check every field of ``item``; ``key`` is the record key, compared with id when given."""
        errors: list[Issue] = []
        warnings: list[Issue] = []
        out: dict[str, Any] = {name: item.get(name) for name in FIELDS}
        self._check_id(out["id"], key, errors)
        out["name"] = self._check_name("name", out["name"], self._max_name, errors)
        out["full_name"] = self._check_name("full_name", out["full_name"], self._max_full_name, errors)
        for name in OPTIONAL_TEXT_FIELDS:
            out[name] = self._check_optional_text(name, out[name], errors)
        out["okved_code"] = self._check_okved(out["okved_code"], errors)
        out["hs_code"] = self._check_hs(out["hs_code"], errors, warnings)
        out["country"] = self._check_country(out["country"], errors)
        out["label"] = self._check_label(out["label"], errors)
        out["created_at"] = self._check_created_at(out["created_at"], errors, warnings)
        return ValidationResult(out, errors, warnings)

    @staticmethod
    def _string(field: str, value: object, errors: list[Issue]) -> str | None:
        """``value`` if it is a string encodable as UTF-8; None (after reporting) otherwise or if None."""
        if value is None:
            return None
        if not isinstance(value, str):
            errors.append(Issue(field, "wrong_type",
                                f"{field} must be a string, not {type(value).__name__}: {_show(value)}"))
            return None
        if not value.isascii() and (bad := _SURROGATE.search(value)):
            errors.append(Issue(field, "invalid_utf8",
                                f"{field} contains lone surrogate U+{ord(bad.group()):04X} at position "
                                f"{bad.start()} and cannot be encoded as UTF-8: {_show(value)}"))
            return None
        return value

    def _check_id(self, value: object, key: str | None, errors: list[Issue]) -> None:
        if value is None:
            errors.append(Issue("id", "required", "id is required but is null"))
            return
        if isinstance(value, str) and not value.strip():
            errors.append(Issue("id", "required", f"id is required but is blank: {_show(value)}"))
            return
        text = self._string("id", value, errors)
        if text is None:
            return
        if len(text) > MAX_ID_LENGTH:
            errors.append(Issue("id", "too_long",
                                f"id is {len(text)} characters long, limit {MAX_ID_LENGTH}: {_show(text)}"))
        if key is not None and text != key:
            errors.append(Issue("id", "key_mismatch",
                                f"id {_show(text)} differs from the record key {_show(key)}"))

    def _check_name(self, field: str, value: object, limit: int, errors: list[Issue]) -> object:
        if value is None:
            errors.append(Issue(field, "required", f"{field} is required but is null"))
            return None
        raw = self._string(field, value, errors)
        if raw is None:
            return value
        if "\ufffd" in raw:
            errors.append(Issue(field, "replacement_char",
                                f"{field} contains the replacement character U+FFFD, a sign of a broken "
                                f"encoding upstream: {_show(raw)}"))
        if control := _CONTROL.search(raw):
            char = f"U+{ord(control.group()):04X}"
            errors.append(Issue(field, "control_chars",
                                f"{field} contains control character {char} at position {control.start()}: "
                                f"{_show(raw)}"))
        text = " ".join(raw.split())
        if not text:
            errors.append(Issue(field, "blank", f"{field} is blank (only whitespace): {_show(raw)}"))
            return None
        if len(text) > limit:
            errors.append(Issue(field, "too_long",
                                f"{field} is {len(text)} characters long, limit {limit}: {_show(text)}"))
        if not any(map(str.isalpha, text)):
            errors.append(Issue(field, "no_letters",
                                f"{field} has no letters, only digits or punctuation: {_show(text)}"))
        return text

    def _check_optional_text(self, field: str, value: object, errors: list[Issue]) -> object:
        raw = self._string(field, value, errors)
        if raw is None:
            return value
        text = raw.strip()
        if len(text) > MAX_OPTIONAL_LENGTH:
            errors.append(Issue(field, "too_long", f"{field} is {len(text)} characters long, limit "
                                f"{MAX_OPTIONAL_LENGTH}: {_show(text)}"))
        return text or None

    def _check_okved(self, value: object, errors: list[Issue]) -> object:
        raw = self._string("okved_code", value, errors)
        if raw is None:
            return value
        code = raw.strip().replace(",", ".")
        if not code:
            return None
        if not _OKVED.fullmatch(code):
            errors.append(Issue("okved_code", "okved_malformed",
                                f"okved_code {_show(raw)} is not shaped like 62, 62.0, 62.01 or 62.01.1"))
        elif code not in self._codes.okved_codes:
            errors.append(Issue("okved_code", "okved_unknown",
                                f"okved_code {_show(raw)} is not in the ОКВЭД2 (OKVED2) list"))
        return code

    def _check_hs(self, value: object, errors: list[Issue], warnings: list[Issue]) -> object:
        raw = self._string("hs_code", value, errors)
        if raw is None:
            return value
        if not raw.strip():
            return None
        code = "".join(raw.split()).replace(".", "")
        if not (code.isascii() and code.isdigit() and len(code) in HS_LENGTHS):
            errors.append(Issue("hs_code", "hs_malformed", f"hs_code {_show(raw)} must be 2, 4, 6, 8 or 10 "
                                "digits (spaces and dots are ignored)"))
            return code
        codes = self._codes
        if code[:2] not in codes.hs_chapters:
            errors.append(Issue("hs_code", "hs_unknown_chapter",
                                f"hs_code {_show(raw)}: chapter {code[:2]!r} is not a ТН ВЭД (HS) chapter"))
        elif len(code) >= 4 and code[:4] not in codes.hs_headings:
            # The list lacks headings without subdivisions, so this may be a valid code.
            warnings.append(Issue("hs_code", "hs_unknown_heading",
                                  f"hs_code {_show(raw)}: heading {code[:4]!r} is not in the ТН ВЭД heading "
                                  "list (which omits headings without subdivisions)"))
        elif len(code) == 10 and code not in codes.hs_subpositions:
            warnings.append(Issue("hs_code", "hs_unknown_subposition",
                                  f"hs_code {_show(raw)} is not in the ТН ВЭД subposition list "
                                  "(2022 edition)"))
        return code

    def _check_country(self, value: object, errors: list[Issue]) -> object:
        raw = self._string("country", value, errors)
        if raw is None:
            return value
        code = raw.strip().upper()
        if not code:
            return None
        codes = self._codes
        if code not in codes.country_alpha2:
            errors.append(Issue("country", "country_unknown",
                                f"country {_show(raw)} is not an ISO 3166-1 alpha-2 code{self._hint(code)}"))
        return code

    def _hint(self, code: str) -> str:
        codes = self._codes
        if alpha2 := codes.country_alpha3.get(code):
            return f"; it is the alpha-3 code of {codes.country_names[alpha2]}, use {alpha2!r}"
        if alpha2 := codes.country_numeric.get(code.zfill(3) if code.isdigit() else code):
            return f"; it is the numeric code of {codes.country_names[alpha2]}, use {alpha2!r}"
        if alpha2 := self._country_by_name.get(code.casefold()):
            return f"; it is the name of {codes.country_names[alpha2]}, use {alpha2!r}"
        return ""

    def _check_label(self, value: object, errors: list[Issue]) -> object:
        raw = self._string("label", value, errors)
        if raw is None:
            return value
        label = raw.strip().lower()
        if not label:
            return None
        if label not in LABELS:
            errors.append(Issue("label", "label_invalid",
                                f"label {_show(raw)} must be 'product' or 'service'"))
        return label

    def _check_created_at(self, value: object, errors: list[Issue], warnings: list[Issue]) -> object:
        if value is None:
            return None
        if not isinstance(value, datetime):
            errors.append(Issue("created_at", "wrong_type",
                                f"created_at must be a datetime, not {type(value).__name__}: {_show(value)}"))
            return value
        created = _utc(value)
        if created > self._now() + FUTURE_TOLERANCE:
            warnings.append(Issue("created_at", "created_at_future",
                                  f"created_at {created.isoformat()} is more than 1 day in the future"))
        elif created < EARLIEST_CREATED_AT:
            warnings.append(Issue("created_at", "created_at_implausible",
                                  f"created_at {created.isoformat()} is before {EARLIEST_CREATED_AT.date()}"))
        return created


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return (_utc(value) - _EPOCH) // _MILLISECOND
    raise TypeError(f"cannot hash a {type(value).__name__}: {_show(value)}")


def content_hash(item: Mapping[str, Any]) -> str:
    """32 hex chars (blake2b, 16 bytes) over every field of a cleaned item, id and created_at included.

    Canonical JSON: sorted keys, datetimes as epoch millis. None values are left out, so a missing field
    and a null one hash alike, and adding a nullable field to the schema does not change existing hashes.
    """
    content = {name: value for name, value in item.items() if value is not None}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=_json_default)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
