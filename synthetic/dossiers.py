"""Writes GIAMDINHHS dossiers from visit events: synthetic files for tests and benchmarks, with real-world quirks."""

from __future__ import annotations

import base64
import random
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any
from xml.sax.saxutils import escape

from producers.xml_ingest.dossier_mapping import LISTS, PAPERS, PATIENT, SUMMARY

LIST_RECORDS = {"XML2": ("DSACH_CHI_TIET_THUOC", "CHI_TIET_THUOC"), "XML3": ("DSACH_CHI_TIET_DVKT", "CHI_TIET_DVKT"),
                "XML4": ("DSACH_CHI_TIET_CLS", "CHI_TIET_CLS"), "XML5": ("DSACH_CHI_TIET_DIEN_BIEN_BENH",
                                                                      "CHI_TIET_DIEN_BIEN_BENH")}
PAPER_ROOTS = {"XML7": "CHI_TIEU_DU_LIEU_GIAY_RA_VIEN", "XML8": "CHI_TIEU_DU_LIEU_TOM_TAT_HO_SO_BENH_AN",
               "XML13": "CHI_TIEU_GIAYCHUYENTUYEN", "XML14": "CHI_TIEU_GIAYHEN_KHAMLAI"}


@dataclass(frozen=True)
class Quirks:
    """How one HOSO is written: content encoding, BOM, declaration, table order, Unicode form."""

    encoding: str = "base64"  # base64 | nested | escaped
    bom: bool = False
    declaration: bool = True
    shuffle_tables: bool = False
    nfd: bool = False


def _text(value: Any, quirks: Quirks) -> str:
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    elif isinstance(value, Decimal):
        value = format(value, "f")
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return unicodedata.normalize("NFD", text) if quirks.nfd else text


def _elements(values: dict[str, Any], fields: dict[str, str], quirks: Quirks, visit_code: str) -> str:
    parts = [f"<MA_LK>{escape(visit_code)}</MA_LK>"]
    for name, element in fields.items():
        value = values.get(name)
        if value is None or value == [] or element == "MA_LK" or "+" in element:
            continue
        parts.append(f"<{element}>{escape(_text(value, quirks))}</{element}>")
    for element, value in (values.get("extra") or {}).items():
        parts.append(f"<{element}>{escape(_text(value, quirks))}</{element}>")
    return "".join(parts)


def table_documents(event: dict[str, Any], quirks: Quirks) -> list[tuple[str, str]]:
    """(LOAIHOSO, table XML) of every table the event carries."""
    code = event["visit_code"]
    summary = {**event, **{k: v for k, v in event["patient"].items()}}
    xml1 = _elements(summary, {**SUMMARY, **PATIENT}, quirks, code)
    xml1 += f"<T_BNCCT>{_text(event['patient_paid'], quirks)}</T_BNCCT><T_BNTT>0</T_BNTT>"
    tables = [("XML1", f"<TONG_HOP>{xml1}</TONG_HOP>")]
    for name, (table, fields) in LISTS.items():
        if event.get(name):
            wrapper, record = LIST_RECORDS[table]
            body = "".join(f"<{record}>{_elements(item, fields, quirks, code)}</{record}>" for item in event[name])
            tables.append((table, f"<CHITIEU_{table}><{wrapper}>{body}</{wrapper}></CHITIEU_{table}>"))
    for name, (table, fields) in PAPERS.items():
        if event.get(name):
            root = PAPER_ROOTS[table]
            tables.append((table, f"<{root}>{_elements(event[name], fields, quirks, code)}</{root}>"))
    for document in [*event.get("certificates", []), *event.get("sensitive", [])]:
        body = "".join("<HO_SO>" + "".join(f"<{k}>{escape(_text(v, quirks))}</{k}>" for k, v in record.items())
                       + "</HO_SO>" for record in document["records"])
        tables.append((document["table"], f"<CHI_TIEU_{document['table']}>{body}</CHI_TIEU_{document['table']}>"))
    return tables


def hoso_xml(event: dict[str, Any], quirks: Quirks, rng: random.Random | None = None) -> str:
    """One HOSO element with its FILEHOSO tables encoded as quirks say."""
    tables = table_documents(event, quirks)
    if quirks.shuffle_tables:
        (rng or random.Random(0)).shuffle(tables)
    files = []
    for kind, document in tables:
        declared = ('<?xml version="1.0" encoding="utf-8"?>\n' if quirks.declaration else "") + document
        if quirks.encoding == "nested":
            content = document
        elif quirks.encoding == "escaped":
            content = escape(declared)
        else:
            raw = (b"\xef\xbb\xbf" if quirks.bom else b"") + declared.encode("utf-8")
            content = base64.b64encode(raw).decode("ascii")
        files.append(f"<FILEHOSO><LOAIHOSO>{kind}</LOAIHOSO><NOIDUNGFILE>{content}</NOIDUNGFILE></FILEHOSO>")
    return "<HOSO>" + "".join(files) + "</HOSO>\n"


def write_dossier(out: IO[str], facility_code: str, created_on: str, events: Iterable[dict[str, Any]], count: int,
                  quirks: Iterable[Quirks] | None = None, rng: random.Random | None = None) -> None:
    """Write a whole GIAMDINHHS file, streaming the HOSO one by one."""
    out.write('<?xml version="1.0" encoding="utf-8"?>\n'
              '<GIAMDINHHS xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n')
    out.write(f"<THONGTINDONVI><MACSKCB>{facility_code}</MACSKCB></THONGTINDONVI>\n")
    out.write(f"<THONGTINHOSO><NGAYLAP>{created_on}</NGAYLAP><SOLUONGHOSO>{count}</SOLUONGHOSO><DANHSACHHOSO>\n")
    quirk_list = iter(quirks) if quirks is not None else None
    for event in events:
        out.write(hoso_xml(event, next(quirk_list) if quirk_list else Quirks(), rng))
    out.write("</DANHSACHHOSO></THONGTINHOSO>\n<CHUKYDONVI/>\n</GIAMDINHHS>\n")
