"""Streaming reader of GIAMDINHHS dossiers (QĐ 4750/QĐ-BYT): one HOSO at a time, tables decoded, text in NFC."""

from __future__ import annotations

import base64
import binascii
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from schemas.problems import Problem

_DIGITS = re.compile(r"[0-9]+")
BOMS = (b"\xef\xbb\xbf",)
# Limits that keep memory bounded whatever a file holds; each is refused with a sentence naming it.
MAX_HOSO_BYTES = 32 * 2**20
MAX_ELEMENTS_PER_HOSO = 100_000
MAX_TABLE_BYTES = 8 * 2**20
MAX_ELEMENTS_PER_TABLE = 100_000


@dataclass
class Hoso:
    """One visit's dossier (HOSO): its tables by LOAIHOSO, each a list of records."""

    index: int
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def visit_code(self) -> str | None:
        """MA_LK of the visit, from its summary table or any record."""
        for records in [self.tables.get("XML1", []), *self.tables.values()]:
            for record in records:
                if record.get("MA_LK"):
                    return record["MA_LK"]
        return None


@dataclass
class DossierHeader:
    """What the envelope says around the HOSO list; the signature is known only at the end."""

    facility_code: str | None = None
    created_on: str | None = None
    declared_count: int | None = None
    signature_present: bool = False


class CountingReader:
    """A binary file wrapper that counts bytes read, for progress on large files."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self.consumed += len(chunk)
        return chunk


def local(tag: object) -> str:
    """Element name without namespace; comments and processing instructions give ''."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def nfc(text: str | None) -> str | None:
    """Stripped text in Unicode NFC, or None when empty."""
    if text is None:
        return None
    text = text.strip()
    return unicodedata.normalize("NFC", text) if text else None


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_comments=True)


def records_of(document: etree._Element) -> list[dict[str, str]]:
    """Every record of a table document: each element with an MA_LK child, whatever wraps it."""
    found = []
    for element in document.iter():
        if not len(element):
            continue
        named = [(local(c.tag), c) for c in element]
        if not any(name == "MA_LK" for name, _ in named):
            continue
        record: dict[str, str] = {}
        for name, child in named:
            if not name:
                continue
            if len(child):
                for leaf in child.iter():
                    if local(leaf.tag) and not len(leaf) and (text := nfc(leaf.text)) is not None:
                        record[f"{name}.{local(leaf.tag)}"] = text
            elif (text := nfc(child.text)) is not None:
                record[name] = text
        found.append(record)
    return found


def _has_text(document: etree._Element) -> bool:
    return any(isinstance(e.tag, str) and e.text and e.text.strip() for e in document.iter())


def decode_content(table: str, content: etree._Element) -> etree._Element | Problem:
    """The table document inside NOIDUNGFILE: base64 of XML, or XML nested as elements or as text."""
    nested = [child for child in content if local(child.tag)]
    if nested:
        return nested[0]
    text = (content.text or "").strip()
    if not text:
        return Problem(f"{table}.NOIDUNGFILE", None, "content_empty", "NOIDUNGFILE is empty")
    if len(text) * 3 // 4 > MAX_TABLE_BYTES:
        return _too_large(table, len(text) * 3 // 4)
    raw: bytes
    if text.startswith("<"):
        raw = text.encode("utf-8")
    else:
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return Problem(f"{table}.NOIDUNGFILE", text[:40], "content_encoding",
                           "NOIDUNGFILE is neither base64 nor XML")
    for bom in BOMS:
        if raw.startswith(bom):
            raw = raw[len(bom):]
    return _parse_table(table, raw.lstrip())


def _too_large(table: str, size: int) -> Problem:
    return Problem(f"{table}.NOIDUNGFILE", None, "content_too_large",
                   f"the table's content is {size / 2**20:.1f} MiB; a table may hold at most "
                   f"{MAX_TABLE_BYTES // 2**20} MiB")


def _parse_table(table: str, raw: bytes) -> etree._Element | Problem:
    """Parse a decoded table, giving up as soon as it holds more elements than a table may."""
    if len(raw) > MAX_TABLE_BYTES:
        return _too_large(table, len(raw))
    parsing = etree.iterparse(io.BytesIO(raw), events=("start",), resolve_entities=False, no_network=True,
                              remove_comments=True)
    try:
        for count, _ in enumerate(parsing, 1):
            if count > MAX_ELEMENTS_PER_TABLE:
                return Problem(f"{table}.NOIDUNGFILE", None, "content_too_many_elements",
                               f"the table holds more than {MAX_ELEMENTS_PER_TABLE:,} elements")
    except etree.XMLSyntaxError as exc:
        return Problem(f"{table}.NOIDUNGFILE", None, "content_not_xml", f"table content is not XML: {exc}")
    return parsing.root


def _read_hoso(index: int, element: etree._Element) -> Hoso:
    hoso = Hoso(index)
    for file_element in element:
        if local(file_element.tag) != "FILEHOSO":
            continue
        kind = content = None
        for part in file_element:
            name = local(part.tag)
            if name == "LOAIHOSO":
                kind = (nfc(part.text) or "").upper()
            elif name == "NOIDUNGFILE":
                content = part
        if not kind:
            hoso.problems.append(Problem("?.LOAIHOSO", None, "table_type_missing",
                                              "FILEHOSO without LOAIHOSO"))
            continue
        if content is None:
            hoso.problems.append(Problem(f"{kind}.NOIDUNGFILE", None, "content_missing",
                                              "FILEHOSO without NOIDUNGFILE"))
            continue
        document = decode_content(kind, content)
        if isinstance(document, Problem):
            hoso.problems.append(document)
            continue
        records = records_of(document)
        if not records and _has_text(document):
            # A table whose records name no visit would vanish from the event: refuse it instead.
            hoso.problems.append(Problem(f"{kind}.NOIDUNGFILE", None, "table_without_records",
                                         "the table has content but no record with an MA_LK element"))
            continue
        hoso.tables.setdefault(kind, []).extend(records)
    return hoso


class DossierReader:
    """Iterates the HOSO of one GIAMDINHHS file without holding the file in memory."""

    def __init__(self, path: Path, verified: etree._Element | None = None) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.header = DossierHeader()
        self._counter: CountingReader | None = None
        self._verified = verified  # a document already parsed and signature-verified: read it, not the file
        self._hoso_elements: list[etree._Element] = []
        if verified is not None:
            self._read_verified_outline(verified)

    @property
    def bytes_read(self) -> int:
        """How far into the file the parser has read."""
        if self._verified is not None:
            return self.size
        return self._counter.consumed if self._counter else 0

    def __iter__(self) -> Iterator[Hoso]:
        if self._verified is not None:
            yield from self._iter_verified(self._verified)
            return
        with self.path.open("rb") as raw:
            self._counter = CountingReader(raw)
            # No huge_tree: libxml2 then refuses any single text node above 10 MB instead of buffering it.
            events = etree.iterparse(self._counter, events=("start", "end"), resolve_entities=False,
                                     no_network=True, remove_comments=True)
            index = 0
            budget: _HosoBudget | None = None
            for event, element in events:
                if budget is not None:
                    budget.spend(self._counter.consumed, event == "start")
                if event == "start":
                    if budget is None and local(element.tag) == "HOSO":
                        budget = _HosoBudget(self._counter.consumed)
                    continue
                if local(element.tag) == "HOSO" and budget is not None:
                    index += 1
                    yield budget.refusal(index) or _read_hoso(index, element)
                    _release(element)
                    budget = None
                elif budget is not None:
                    if budget.exceeded:
                        _release(element)  # free an oversized HOSO as it is read, never building it
                else:
                    self._read_header(element)

    def _iter_verified(self, root: etree._Element) -> Iterator[Hoso]:
        """The HOSO of a verified document, in order, with the same per-HOSO element limit as a streamed file."""
        for index, element in enumerate(self._hoso_elements, 1):
            if sum(1 for _ in element.iter()) > MAX_ELEMENTS_PER_HOSO:
                yield Hoso(index, problems=[Problem("HOSO", None, "hoso_too_large", (
                    f"this HOSO holds more than {MAX_ELEMENTS_PER_HOSO:,} elements, the most one visit may take"))])
            else:
                yield _read_hoso(index, element)

    def _read_verified_outline(self, element: etree._Element) -> None:
        """Read the header of a verified document and find its HOSO elements, without entering them."""
        for child in element:
            if not isinstance(child.tag, str):
                continue
            if local(child.tag) == "HOSO":
                self._hoso_elements.append(child)
                continue
            self._read_header(child)
            self._read_verified_outline(child)

    def _read_header(self, element: etree._Element) -> None:
        name = local(element.tag)
        parent = element.getparent()
        if name == "MACSKCB" and parent is not None and local(parent.tag) == "THONGTINDONVI":
            self.header.facility_code = nfc(element.text)
        elif name == "NGAYLAP":
            self.header.created_on = nfc(element.text)
        elif name == "SOLUONGHOSO":
            count = nfc(element.text)
            self.header.declared_count = int(count) if count and _DIGITS.fullmatch(count) else None
        elif name == "CHUKYDONVI":
            self.header.signature_present = len(element) > 0 or bool(nfc(element.text))


@dataclass
class _HosoBudget:
    """How much of the file one HOSO has taken so far, and which limit it broke."""

    started_at: int
    elements: int = 0
    exceeded: str | None = None

    def spend(self, position: int, new_element: bool) -> None:
        self.elements += new_element
        if self.exceeded is None and self.elements > MAX_ELEMENTS_PER_HOSO:
            self.exceeded = f"holds more than {MAX_ELEMENTS_PER_HOSO:,} elements"
        elif self.exceeded is None and position - self.started_at > MAX_HOSO_BYTES:
            self.exceeded = f"is larger than {MAX_HOSO_BYTES // 2**20} MiB"

    def refusal(self, index: int) -> Hoso | None:
        if self.exceeded is None:
            return None
        return Hoso(index, problems=[Problem("HOSO", None, "hoso_too_large",
                                             f"this HOSO {self.exceeded}, the most one visit may take")])


def _release(element: etree._Element) -> None:
    """Free a processed HOSO and the siblings before it, so memory stays flat on large files."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]
