"""The encoding of a text export: a BOM says it; else UTF-8 if the bytes are UTF-8; else cp1251 or cp866,
whichever reads as more plausible Cyrillic.

Russian exports come in UTF-8 (with or without a BOM), Windows-1251 (Excel's "CSV" on a Russian Windows,
1C), DOS cp866 (old 1C and DBF tools) and UTF-16 with a BOM (Excel's "Unicode text"). Every byte sequence
decodes as some cp1251/cp866 text, so those two are told apart by the share of Russian letters among the
non-ASCII characters: cp1251 text read as cp866 turns capitals and half the lower-case letters into
box-drawing characters, cp866 text read as cp1251 turns them into punctuation and rare letters.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

SAMPLE_BYTES = 1 << 20
# A UTF-8 file with a few corrupt bytes is still UTF-8 (its bad rows are skipped as undecodable); cp1251
# and cp866 text has nearly every non-ASCII byte invalid as UTF-8.
MAX_INVALID_UTF8_SHARE = 0.05
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ASCII = bytes(range(128))
SCORE_BYTES = 1 << 16
UTF16_HIGH_SHARE = 0.9
_RUSSIAN = frozenset("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ")


@dataclass(frozen=True)
class Encoding:
    name: str  # a Python codec name
    bom: int  # bytes of BOM to skip
    detected: bool  # False when given by the operator

    def describe(self) -> str:
        return f"{self.name} (BOM)" if self.bom else self.name


def resolve_encoding(path: Path, override: str | None = None) -> Encoding:
    """The file's encoding: ``override`` when given (checked to be a codec), else detected."""
    with path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    truncated = len(sample) == SAMPLE_BYTES
    if override:
        try:
            name = codecs.lookup(override).name
        except LookupError:
            raise ValueError(f"unknown encoding {override!r} (e.g. utf-8, cp1251, cp866, utf-16)") from None
        bom = _bom_length(sample, name)
        return Encoding(name, bom, detected=False)
    return detect_encoding(sample, truncated=truncated)


def detect_encoding(sample: bytes, truncated: bool = False) -> Encoding:
    """The encoding of text whose first bytes are ``sample`` (``truncated``: the file goes on)."""
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return Encoding(name, len(bom), detected=True)
    utf16 = _bomless_utf16(sample)
    if utf16:
        return Encoding(utf16, 0, detected=True)
    if _mostly_utf8(sample, truncated):
        return Encoding("utf-8", 0, detected=True)
    return Encoding(_likelier_cyrillic(sample), 0, detected=True)


def cyrillic_share(text: str) -> float:
    """Share of Russian letters among the non-ASCII characters of ``text`` (1.0 when there are none)."""
    non_ascii = [ch for ch in text if ord(ch) > 127]
    if not non_ascii:
        return 1.0
    return sum(ch in _RUSSIAN for ch in non_ascii) / len(non_ascii)


def _likelier_cyrillic(sample: bytes) -> str:
    # Ties (no non-ASCII bytes, or text that reads as letters both ways) go to cp1251, by far the commoner.
    head = sample[:SCORE_BYTES]
    scores = {name: cyrillic_share(head.decode(name, errors="replace")) for name in ("cp1251", "cp866")}
    return "cp866" if scores["cp866"] > scores["cp1251"] else "cp1251"


def _mostly_utf8(sample: bytes, truncated: bool) -> bool:
    non_ascii = len(sample.translate(None, _ASCII))
    if not non_ascii:
        return True
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(sample, final=not truncated)
    invalid = text.count("\ufffd") - sample.count("\ufffd".encode())
    return invalid <= MAX_INVALID_UTF8_SHARE * non_ascii


def _bomless_utf16(sample: bytes) -> str | None:
    """UTF-16 without a BOM: Latin and Cyrillic text has 0x00 or 0x04 as the high byte of nearly every unit
    (odd bytes in little-endian, even ones in big-endian), which no 8-bit Russian text has."""
    head = sample[: SCORE_BYTES & ~1]
    if len(head) < 8:
        return None
    units = len(head) // 2
    high_odd = sum(1 for byte in head[1::2] if byte in (0, 4))
    high_even = sum(1 for byte in head[0::2] if byte in (0, 4))
    if high_odd >= UTF16_HIGH_SHARE * units and high_even < 0.5 * units:
        return "utf-16-le"
    if high_even >= UTF16_HIGH_SHARE * units and high_odd < 0.5 * units:
        return "utf-16-be"
    return None


def _bom_length(sample: bytes, codec: str) -> int:
    for bom, name in _BOMS:
        if sample.startswith(bom) and codecs.lookup(name).name == codec:
            return len(bom)
    return 0  # e.g. utf-16 or utf-8-sig: the codec reads the BOM itself
