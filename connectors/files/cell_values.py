"""One cell of an export as the item schema wants it: text trimmed, numbers as the text they stand for,
dates as aware datetimes."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time
from typing import Any

# No-break and other fixed-width spaces that exports put where a space was meant.
_SPACES = str.maketrans({"\u00a0": " ", "\u2007": " ", "\u202f": " ", "\ufeff": ""})
_LONE_SURROGATE = re.compile("[\udc80-\udcff]")
_DAY_FIRST = ("%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d.%m.%y", "%d/%m/%Y")


class BadDate(ValueError):
    pass


def clean_text(value: str) -> str | None:
    """Strip, no-break spaces as spaces; blank → None. Nothing else about the content changes."""
    text = value.translate(_SPACES).strip()
    return text or None


def is_undecodable(value: Any) -> bool:
    """Text decoded with ``surrogateescape`` that holds bytes the file's encoding could not decode."""
    return isinstance(value, str) and _LONE_SURROGATE.search(value) is not None


def number_text(value: float | int) -> str:
    """A number as the code or quantity it stands for: 8471300000.0 → '8471300000', 62.01 → '62.01'."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value)


def as_text(value: Any) -> str | None:
    """A cell for a string field of the schema."""
    if value is None:
        return None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool | int | float):
        if isinstance(value, float) and math.isnan(value):
            return None
        return number_text(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return clean_text(str(value))


def as_datetime(value: Any) -> datetime | None:
    """A created_at cell: ISO 8601 text (``Z`` allowed), day-first dates (31.12.2024[ 10:00[:00]]), epoch
    milliseconds, or a date/datetime cell. A naive time is UTC (as the validator takes it)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = clean_text(value)
        if text is None:
            return None
        parsed = _parse_text_date(text)
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            return None
        try:
            parsed = datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise BadDate(f"{value!r} is not epoch milliseconds in range") from exc
    else:
        raise BadDate(f"{type(value).__name__} {value!r} is not a date")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parse_text_date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    for pattern in _DAY_FIRST:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise BadDate(f"{text!r} is neither ISO 8601 nor DD.MM.YYYY[ HH:MM[:SS]]")
