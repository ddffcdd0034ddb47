"""Whether a visit is sensitive, decided from everything it holds: a property of the whole visit, not of one field.

A visit is sensitive when any of these appear anywhere in it (the patient's identity block aside):
an ICD-10 code in a sensitive range (in a code field or written in any text, certificates and papers
included), a medicine or service code on the deployment's lists, a word that names the disease or its
treatment, or a sensitive table (XML6 HIV/AIDS, XML15 tuberculosis). A sensitive visit's list entry shows
only its dates and facility; it stays off analytics; its detail, for the citizen alone, stays complete.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ahocorasick
import orjson
import re2

from domain.sensitive_diagnoses import SensitiveDiagnoses
from schemas.catalogue import VISIT_EVENT

SENSITIVE_TABLES = ("XML6", "XML15")
# The visit's own identifiers, times and patient block: not clinical, and a UUID's letters and digits
# could read as an ICD-10 code.
_NOT_CLINICAL = frozenset({"patient", "event_id", "visit_code", "facility_code", "admitted_at", "discharged_at",
                           "inpatient_at", "version"})
_NOT_CLINICAL_SORTED = sorted(_NOT_CLINICAL)
# Raise when the way a visit is judged changes (not its settings): every stored judgement is then redone.
_POLICY_REVISION = 1
_MOST_CATEGORIES_TO_SCAN = 64  # wider ranges are searched with the regex alone
_JSON_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)")
_ICD10_TOKEN = re.compile(r"(?<![A-Z0-9])([A-Z]\d{2})(?:\.?\d{1,2})?(?![A-Z0-9])")


@dataclass(frozen=True)
class Sensitivity:
    """Whether a visit was found sensitive, and under which policy (its fingerprint): stored with its row."""

    sensitive: bool
    under: str


class BadSensitiveList(ValueError):
    """A HEALTHBOOK_SENSITIVE_* setting is not a comma-separated list of codes or words."""


def parse_list(setting: str, text: str) -> tuple[str, ...]:
    """A comma-separated setting as its items; raise BadSensitiveList naming the setting when it holds none."""
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise BadSensitiveList(f"{setting} is empty: list at least one code or word, comma-separated")
    return items


@dataclass(frozen=True)
class SensitivePolicy:
    """What makes a visit sensitive in this deployment: diagnoses, medicine and service codes, words, tables."""

    diagnoses: SensitiveDiagnoses
    medicine_codes: tuple[str, ...]  # drug codes or their parts (ATC J05AR antiretrovirals, the RHZE regimen)
    service_codes: tuple[str, ...]  # service, supply and test codes, by prefix
    words: tuple[str, ...]  # words or phrases, any case (HIV, ARV, lao phổi)
    tables: tuple[str, ...] = SENSITIVE_TABLES

    def __post_init__(self) -> None:
        codes = "|".join(re.escape(c.upper()) for c in sorted((*self.medicine_codes, *self.service_codes),
                                                               key=len, reverse=True))
        object.__setattr__(self, "words", tuple(unicodedata.normalize("NFC", w) for w in self.words))
        words = "|".join(re.escape(w) for w in sorted(self.words, key=len, reverse=True))
        # A code may follow digits (a regimen's months: 2RHZE/4RHE) but not letters; a word stands alone.
        object.__setattr__(self, "_codes", re.compile(rf"(?<![A-Z])(?:{codes})"))
        object.__setattr__(self, "_words", re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE))
        # Plain substring tests first: a Python regex over a whole visit costs hundreds of microseconds, and
        # almost every visit has none of these. RE2 (a DFA over the UTF-8 bytes) says whether any part occurs
        # at all; only then does one Aho-Corasick pass say which kinds, and the regexes confirm a hit.
        categories = self.diagnoses.categories(limit=_MOST_CATEGORIES_TO_SCAN)
        object.__setattr__(self, "_scan_all_codes", categories is None)
        parts = {_DIAGNOSIS: [c.lower() for c in categories or ()],
                 _CODE: [c.lower() for c in (*self.medicine_codes, *self.service_codes)],
                 _WORD: [w.lower() for w in self.words]}
        object.__setattr__(self, "_parts", _automaton(parts))
        every_part = [part for texts in parts.values() for part in texts]
        object.__setattr__(self, "_any_part", _any_of(every_part))
        object.__setattr__(self, "_in_clean_json", None if self._scan_all_codes else _json_any_of(every_part))
        settings = orjson.dumps([self.diagnoses.ranges, self.medicine_codes, self.service_codes, self.words,
                                 self.tables, _NOT_CLINICAL_SORTED, _POLICY_REVISION])
        object.__setattr__(self, "_fingerprint", hashlib.sha256(settings).hexdigest()[:16])

    @property
    def fingerprint(self) -> str:
        """A short digest of everything that decides sensitivity: a judgement stored under another one is redone."""
        return self._fingerprint  # type: ignore[attr-defined,no-any-return]

    def judge(self, record: Mapping[str, Any], *, has_sensitive_tables: bool = False,
              clean_json: bytes | None = None) -> Sensitivity:
        """Whether this visit record is sensitive, as stored beside the visit for the book's list and analytics."""
        return Sensitivity(self.of_visit(record, has_sensitive_tables=has_sensitive_tables, clean_json=clean_json),
                           self.fingerprint)

    def judged(self, record: Mapping[str, Any], known: Sensitivity | None, *,
               has_sensitive_tables: bool = False, clean_json: bytes | None = None) -> bool:
        """The stored judgement when it was made under this very policy; otherwise the record is judged again."""
        if known is not None and known.under == self.fingerprint:
            return known.sensitive
        return self.of_visit(record, has_sensitive_tables=has_sensitive_tables, clean_json=clean_json)

    def of_visit(self, record: Mapping[str, Any], *, has_sensitive_tables: bool = False,
                 clean_json: bytes | None = None) -> bool:
        """Whether this visit record (an event's, or the book's with its tables stored apart) is sensitive.

        clean_json, when given, is the record's book JSON (Visit.clean_json: every field but the sensitive
        tables, all NFC, no control character); a visit in which it names no part at all is passed at once.
        """
        if self._has_table(record, has_sensitive_tables):
            return True
        if clean_json is not None and self.passes_clean_json(clean_json):
            return False
        # One JSON text is far faster to search than each field; its escapes (\n, \u0001) would glue a code to
        # a letter or digit, so each becomes a space.
        return self._names_it(_JSON_ESCAPE.sub(" ", orjson.dumps(_clinical(record), default=str).decode()))

    def passes_clean_json(self, clean_json: bytes) -> bool:
        """Whether a visit's clean book JSON names no listed part at all: not sensitive, with nothing more to judge.

        A schema's own key can hold a part ('hiv' in archive_no): such a visit is judged in full.
        """
        pattern = self._in_clean_json  # type: ignore[attr-defined]
        return pattern is not None and pattern.search(clean_json, _clinical_start_in(clean_json)) is None

    def why(self, record: Mapping[str, Any], *, has_sensitive_tables: bool = False) -> str | None:
        """What makes the visit sensitive and where, for people reading a log or a test; None when nothing does."""
        if self._has_table(record, has_sensitive_tables):
            return "a sensitive table (XML6, XML15)"
        return next((where for where, text in _texts(_clinical(record)) if self._names_it(text)), None)

    def _has_table(self, record: Mapping[str, Any], has_sensitive_tables: bool) -> bool:
        return has_sensitive_tables or bool(record.get("sensitive")) or any(
            table.get("table") in self.tables for table in record.get("certificates") or [])

    def _names_it(self, text: str) -> bool:
        text = unicodedata.normalize("NFC", text)  # a clinic's XML may spell 'phổi' with combining marks
        lower = text.lower().replace("_", " ")
        any_part = self._any_part  # type: ignore[attr-defined]
        found = _kinds_in(self._parts, lower) if any_part is not None and any_part.search(  # type: ignore[attr-defined]
            lower.encode("utf-8", "surrogatepass")) else set()
        if (self._scan_all_codes or _DIAGNOSIS in found) and \
                any(code in self.diagnoses for code in _ICD10_TOKEN.findall(text.upper())):
            return True
        if _CODE in found and self._codes.search(text.upper()) is not None:  # type: ignore[attr-defined]
            return True
        return _WORD in found and self._words.search(text.replace("_", " ")) is not None  # type: ignore[attr-defined]


_DIAGNOSIS, _CODE, _WORD = "diagnosis category", "medicine or service code", "word"


def _automaton(parts: dict[str, list[str]]) -> ahocorasick.Automaton | None:
    """One Aho-Corasick automaton over every plain part, each naming the kinds it belongs to; None when none."""
    kinds: dict[str, set[str]] = {}
    for kind, texts in parts.items():
        for text in texts:
            kinds.setdefault(text, set()).add(kind)
    if not kinds:
        return None
    automaton = ahocorasick.Automaton()
    for text, of in kinds.items():
        automaton.add_word(text, frozenset(of))
    automaton.make_automaton()
    return automaton


def _any_of(parts: list[str]) -> Any:
    """One RE2 pattern matching any of the plain parts as UTF-8 bytes; None when there are none."""
    if not parts:
        return None
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1  # byte by byte: UTF-8 substrings are exact, no decoding
    options.max_mem = 64 << 20  # room for a DFA over a long deployment list (the default is 8 MiB)
    escaped = (re2.escape(part.encode("utf-8", "surrogatepass")) for part in sorted(set(parts), key=len, reverse=True))
    return re2.compile(b"|".join(escaped), options)


def _clinical_start(schema: Mapping[str, Any]) -> bytes | None:
    """What precedes a book JSON's first clinical field; None when not only fields the judgement skips come first.

    The book JSON keeps the visit schema's field order. Searching from there, the shortcut skips the patient
    block and the event id (whose random letters and digits can read as a code) and still reads every field
    the judgement reads. The marker is found only where it is structure, not text: inside a JSON string
    every quote is escaped, and the skipped fields must not hold a key of the same name.
    """
    def keys_in(kind: Any) -> Iterator[str]:
        if isinstance(kind, str) and kind not in _AVRO_PRIMITIVES:
            yield "*"  # a named type defined elsewhere: its keys are not read here
        if isinstance(kind, list):
            for branch in kind:
                yield from keys_in(branch)
        elif isinstance(kind, Mapping):
            if kind.get("type") == "map":
                yield "*"  # any key at all
            yield from keys_in(kind.get("items"))
            for field in kind.get("fields", ()):
                yield field["name"]
                yield from keys_in(field["type"])

    skipped = []
    for field in schema["fields"]:
        if field["name"] not in _NOT_CLINICAL:
            held = {key for kind in skipped for key in keys_in(kind)}
            return None if not skipped or field["name"] in held or "*" in held else f',"{field["name"]}":'.encode()
        skipped.append(field["type"])
    return None


_AVRO_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_CLINICAL_START = _clinical_start(VISIT_EVENT.parsed)


def _clinical_start_in(clean_json: bytes) -> int:
    """Where the clinical fields of a clean book JSON begin (0: search it whole)."""
    return max(clean_json.find(_CLINICAL_START), 0) if _CLINICAL_START is not None else 0


def _json_any_of(parts: list[str]) -> Any:
    """One RE2 pattern over a record's clean book JSON (UTF-8) that matches wherever the judgement could find a part.

    The judgement searches the lower-cased JSON of the record's clinical fields, each escape and underscore
    read as a space. The book JSON holds each of those fields written the same (the sensitive tables,
    judged by their presence, aside), and no part can reach past the text of one field without a comma,
    a quote or a brace: so the raw book JSON, each part's letters matched in any case that lowers to them
    and each space as a space, an underscore or an escape, finds every part the judgement could, and more.
    None (judge in full) when a part makes that untrue, or when there are no parts.
    """
    if not parts or any(set(part) & set('",{}\\') or _SPLIT_BY_LOWERING & set(part) for part in parts):
        return None
    options = re2.Options()
    options.max_mem = 64 << 20
    folded = _cases_lowering_to()
    space = r"(?:[ _]|\\u[0-9a-fA-F]{4}|\\.)"

    def letter(char: str) -> str:
        if char == " ":
            return space
        return "(?:" + "|".join(re2.escape(c) for c in sorted({char, *folded.get(char, ())})) + ")"

    alternatives = ("".join(map(letter, part)) for part in sorted(set(parts), key=len, reverse=True))
    pattern = re2.compile("|".join(alternatives).encode("utf-8", "surrogatepass"), options)
    return None if pattern.search(b'{"sensitive":[]}') else pattern


# The one character str.lower() turns into two (U+0130 into i and U+0307): a part holding the second of them
# could match where the text holds the first, so such a part is judged in full.
_SPLIT_BY_LOWERING = frozenset("\u0307")


@functools.cache
def _cases_lowering_to() -> dict[str, frozenset[str]]:
    """For each character, every other character str.lower() turns into it, alone or as a word's last letter."""
    found: dict[str, set[str]] = {}
    for start in range(0, 0x110000, 256):
        block = "".join(map(chr, range(start, start + 256)))
        if block.lower() == block:  # most blocks have no letter with a case: one test each
            continue
        for char in block:
            for low in (char.lower(), ("a" + char).lower()[1:]):  # after a letter, as a word's last: final sigma
                if low != char:
                    for part in low:
                        found.setdefault(part, set()).add(char)
    return {char: frozenset(others) for char, others in found.items()}


def _kinds_in(automaton: ahocorasick.Automaton | None, lower: str) -> set[str]:
    """Which kinds of plain part occur in the text, in one pass over it rather than one per part."""
    found: set[str] = set()
    for _, kinds in automaton.iter(lower) if automaton is not None else ():
        found |= kinds
    return found


def _clinical(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in _NOT_CLINICAL}


def _texts(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every text in a record with where it sits, field names included (a table's columns name its content)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, str(key)
            yield from _texts(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _texts(item, f"{where}[{index}]")
    elif isinstance(value, str):
        yield where, value
