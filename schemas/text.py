"""Text from outside, made safe to store and compare: no control characters, always Unicode NFC."""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any

from schemas.native import compiled
from schemas.problems import Problem

# The C0 control characters except tab, line feed and carriage return, which free text may hold.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


# In JSON text, C0 controls other than tab, line feed and carriage return are escaped as \u00XX, \b or \f.
_ESCAPED_CONTROL = re.compile(r"\\u00[01]|\\[bf]")


def clean_text(value: Any, path: str = "") -> tuple[Any, list[Problem]]:
    """The value with every string in NFC, and a problem for each string holding a control character."""
    if _already_clean(value):
        return value, []
    return _cleaned(value, path)


def _already_clean(value: Any) -> bool:
    """Whether no string in value holds a control character and all are NFC, checked at C speed in one pass.

    The JSON text escapes every control character (a literal backslash may look like one: then the full
    walk decides), and NFC is closed under joining strings by the ASCII punctuation JSON puts between
    them, since those never combine with what follows.
    """
    if isinstance(value, str):
        return not _CONTROL.search(value) and unicodedata.is_normalized("NFC", value)
    return json_text_is_clean(json.dumps(value, ensure_ascii=False, default=str, check_circular=False))


def json_text_is_clean(text: str) -> bool:
    """Whether JSON text written with ensure_ascii=False holds no escaped control character and is all NFC."""
    return not _ESCAPED_CONTROL.search(text) and unicodedata.is_normalized("NFC", text)


def json_bytes_are_clean(data: bytes) -> bool:
    """json_text_is_clean for the UTF-8 of the text; in C it may answer False more often, never True more often.

    The C scan refuses every character that can make a text other than NFC (_maybe_not_nfc) rather than
    normalising: NFC text holds none of them but for rare combining marks, and on those the model decides.
    """
    if compiled is not None:
        return compiled.json_is_clean(data, _maybe_not_nfc())  # type: ignore[no-any-return]
    try:
        return json_text_is_clean(data.decode())
    except UnicodeDecodeError:
        return False


@functools.cache
def _maybe_not_nfc() -> bytes:
    """A bit for each code point that can make a text other than NFC (built once a process, about 0.2 s).

    Unicode's NFC quick check passes a text holding only characters that are NFC_Quick_Check=Yes and of
    combining class 0. The bits cover the rest: each character of nonzero combining class, each that is not
    NFC alone (Quick_Check=No), and each that follows the first in some character's canonical decomposition
    (Quick_Check=Maybe: those that can compose with what precedes them, Hangul jamo included).
    """
    bits = bytearray(0x110000 // 8)

    def flag(char: str) -> None:
        bits[ord(char) >> 3] |= 1 << (ord(char) & 7)

    for start in range(0x80, 0x110000, 256):
        block = "".join(chr(c) for c in range(start, min(start + 256, 0x110000)) if not 0xD800 <= c < 0xE000)
        if unicodedata.is_normalized("NFD", block) and not any(map(unicodedata.combining, block)):
            continue  # no character here decomposes or combines: none is flagged, nor named by one
        for char in block:
            if unicodedata.combining(char) or not unicodedata.is_normalized("NFC", char):
                flag(char)
            for later in unicodedata.normalize("NFD", char)[1:]:
                flag(later)
    return bytes(bits)


def _cleaned(value: Any, path: str) -> tuple[Any, list[Problem]]:
    """clean_text, string by string."""
    if isinstance(value, str):
        found = _CONTROL.search(value)
        if found:
            return value, [Problem(path or "text", value[:200], "control_character",
                                   f"contains control character U+{ord(found.group()):04X} at position "
                                   f"{found.start()}; text may hold tab and line breaks only")]
        return (value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)), []
    if isinstance(value, dict):
        cleaned: dict[Any, Any] = {}
        problems: list[Problem] = []
        for key, item in value.items():
            cleaned_key, key_problems = _cleaned(key, f"{path}.{key}" if path else str(key))
            cleaned[cleaned_key], item_problems = _cleaned(item, f"{path}.{key}" if path else str(key))
            problems += key_problems + item_problems
        return cleaned, problems
    if isinstance(value, list):
        results = [_cleaned(item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(value)]
        return [item for item, _ in results], [p for _, found in results for p in found]
    return value, []
