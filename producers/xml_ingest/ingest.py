"""healthbook ingest: GIAMDINHHS dossier files in, one signed visit event per HOSO out, with a report per file."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from lxml import etree
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from healthbook import kafka
from healthbook.config import Settings
from producers.clinic_keys import load_signer
from producers.publisher import ClinicPublisher, size_problem
from producers.xml_ingest.dossier_mapping import MappingFailed, map_hoso, source_of
from producers.xml_ingest.dossier_signature import SignatureStatus, check_signature, load_certificate
from producers.xml_ingest.giamdinhhs import DossierReader, Hoso
from producers.xml_ingest.ingest_ledger import IngestLedger, Seen
from schemas.envelope import encode_visit, sealed_size
from schemas.problems import Problem
from schemas.rules import RuleBroken, check_facility_code, parse_day
from schemas.visit import VisitEvent, read_visit

ACK_EVERY = 1000


@dataclass(frozen=True)
class RejectedHoso:
    """One HOSO that was not published, and exactly where (file, HOSO, MA_LK) and why (the problem)."""

    file: str
    hoso: int
    visit_code: str | None
    problem: Problem

    def line(self) -> str:
        """The rejection as one line for the clinic's operator."""
        return f"{self.file} HOSO #{self.hoso} MA_LK={self.visit_code or '?'} {self.problem.sentence()}"


@dataclass
class FileReport:
    """What ingest did with one file."""

    file: str
    read: int = 0
    valid: int = 0
    published: int = 0
    already_published: int = 0
    rejected: list[RejectedHoso] = field(default_factory=list)
    file_error: str | None = None
    signature: SignatureStatus | None = None

    @property
    def rejected_hoso(self) -> int:
        """How many HOSO were not published (one may break several rules)."""
        return len({r.hoso for r in self.rejected})

    @property
    def ok(self) -> bool:
        """Whether every HOSO of the file was published."""
        return not self.rejected and self.file_error is None


class IngestError(RuntimeError):
    """A file cannot be ingested at all (no facility code, no key, not XML)."""


def dossier_files(target: Path) -> list[Path]:
    """The file itself, or every .xml file below a directory, in name order."""
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() == ".xml")
    if target.is_file():
        return [target]
    raise IngestError(f"{target} is neither a file nor a directory")


def version_from(created_on: str | None) -> int:
    """Default visit version of a dossier: its creation date NGAYLAP as yyyyMMdd."""
    if not created_on:
        raise IngestError("the dossier has no NGAYLAP to version its visits by; pass --version")
    try:
        parse_day(created_on)
    except RuleBroken as exc:
        raise IngestError(f"NGAYLAP={created_on!r} {exc.message}; pass --version") from None
    return int(created_on)


def _validated(event: dict[str, Any], report: FileReport, index: int) -> VisitEvent | None:
    checked = read_visit(event)
    if isinstance(checked, list):
        report.rejected += [RejectedHoso(report.file, index, event.get("visit_code"), p.at(source_of(p.field)))
                            for p in checked]
        return None
    return checked


@dataclass(frozen=True)
class SizeCheck:
    """Whether a visit, once signed, fits the visits topic; checked before signing, and in --check too."""

    facility: str
    key_id: str
    limit: int

    def problem(self, record: dict[str, Any], payload: bytes) -> Problem | None:
        """The visit_too_large problem of this visit (encoded as payload), if it has it."""
        return size_problem(sealed_size(len(payload), record, self.facility, self.key_id), self.limit)


async def ingest_file(path: Path, settings: Settings, ledger: IngestLedger, *, key_id: str,
                      version: int | None, progress: Progress, check_only: bool = False) -> FileReport:
    """Read, map, validate, sign and publish every HOSO of one file."""
    report = FileReport(str(path))
    reader = DossierReader(path)
    hosos = iter(reader)
    first = next(hosos, None)  # the envelope's facility code and NGAYLAP come before the first HOSO
    facility = reader.header.facility_code
    if facility is None:
        raise IngestError(f"{path}: no THONGTINDONVI/MACSKCB facility code before the first HOSO")
    try:
        check_facility_code(facility)
    except RuleBroken as exc:
        raise IngestError(f"{path}: MACSKCB={facility!r} {exc.message}") from None
    visit_version = version if version is not None else version_from(reader.header.created_on)
    signature = check_signature(path, load_certificate(settings.key_dir, facility),
                                settings.xml_signature_max_mb * 2**20)
    report.signature = signature.status
    if signature.blocks:
        report.file_error = signature.message
        return report
    if signature.verified is not None:  # read the visits from exactly the document that was verified
        reader = DossierReader(path, signature.verified)
        hoso_stream: Iterable[Hoso] = iter(reader)
        if reader.header.facility_code not in (None, facility):
            raise IngestError(f"{path}: the verified document names facility {reader.header.facility_code}")
    else:
        hoso_stream = chain([first] if first else [], hosos)
    task = progress.add_task(path.name, total=reader.size, hoso=0)
    publisher = None if check_only else ClinicPublisher(
        kafka.clinic_broker(settings, facility), settings.topics.visits, facility,
        load_signer(settings.key_dir, facility, key_id), max_visit_bytes=settings.max_visit_bytes)
    size = SizeCheck(facility, key_id, settings.max_visit_bytes)
    async with publisher or contextlib.nullcontext():
        try:
            await _publish_all(hoso_stream, reader, facility, visit_version, report, ledger, publisher, progress,
                               task, size)
        except etree.XMLSyntaxError as exc:
            report.file_error = f"the XML breaks after HOSO #{report.read}: {exc}"
    progress.update(task, completed=reader.size, hoso=report.read)
    return report


async def _publish_all(hosos: Iterable[Hoso], reader: DossierReader, facility: str, visit_version: int,
                       report: FileReport, ledger: IngestLedger, publisher: ClinicPublisher | None,
                       progress: Progress, task: TaskID, size: SizeCheck) -> None:
    """Map, validate and (unless publisher is None: a check) sign and publish each HOSO."""
    pending: list[tuple[asyncio.Future, tuple[str, str, int, str]]] = []

    async def settle() -> None:
        await asyncio.gather(*(future for future, _ in pending))
        ledger.record([entry for _, entry in pending])
        report.published += len(pending)
        pending.clear()

    try:
        for hoso in hosos:
            report.read += 1
            progress.update(task, completed=reader.bytes_read, hoso=report.read)
            try:
                event = map_hoso(hoso, facility, visit_version)
            except MappingFailed as failed:
                report.rejected += [RejectedHoso(report.file, hoso.index, hoso.visit_code, p) for p in failed.problems]
                continue
            if event["facility_code"] != facility:
                report.rejected.append(RejectedHoso(report.file, hoso.index, hoso.visit_code, Problem(
                    "XML1.MA_CSKCB", event["facility_code"], "facility_mismatch",
                    f"the dossier is from facility {facility}; its key cannot sign another's")))
                continue
            model = _validated(event, report, hoso.index)
            if model is None:
                continue
            record = model.model_dump()
            payload = encode_visit(record)
            if (too_large := size.problem(record, payload)) is not None:
                report.rejected.append(RejectedHoso(report.file, hoso.index, model.visit_code, too_large))
                continue
            digest = hashlib.sha256(model.model_dump_json().encode()).hexdigest()
            seen = ledger.seen(facility, model.visit_code, visit_version, digest)
            if seen is Seen.CHANGED:
                report.rejected.append(RejectedHoso(report.file, hoso.index, model.visit_code, Problem(
                    "GIAMDINHHS.NGAYLAP", str(visit_version), "changed_without_new_version",
                    "this visit was published with other content at the same version; export it with a later "
                    "NGAYLAP or pass a higher --version, or the pipeline would keep the old content")))
                continue
            if seen is Seen.SAME:
                report.already_published += 1
            report.valid += 1
            if publisher is None:
                continue
            pending.append((await publisher.publish(record, validate=False, payload=payload),
                            (facility, model.visit_code, visit_version, digest)))
            if len(pending) >= ACK_EVERY:
                await settle()
    finally:
        await settle()


async def ingest(settings: Settings, target: Path, *, key_id: str = "k1", version: int | None = None,
                 console: Console | None = None, check_only: bool = False) -> list[FileReport]:
    """Ingest a file or every dossier below a directory; a bad file is reported and the next one goes on."""
    console = console or Console(stderr=True)
    ledger = IngestLedger(settings.ingest_ledger)
    reports = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[hoso]} HOSO"),
               TransferSpeedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
            for path in dossier_files(target):
                try:
                    reports.append(await ingest_file(path, settings, ledger, key_id=key_id, version=version,
                                                     progress=progress, check_only=check_only))
                except kafka.NoKafkaLogin:
                    raise  # about this machine, not the file: no later file could be published either
                except Exception as exc:  # one unreadable file is one report line; the next file goes on
                    reports.append(FileReport(str(path), file_error=_file_error(exc)))
    finally:
        ledger.close()
    return reports


def _file_error(exc: Exception) -> str:
    """Why a whole file could not be read, in words a clinic's operator can act on."""
    if isinstance(exc, etree.XMLSyntaxError) and "Text node too long" in str(exc):
        return ("a single text value is longer than 10 MB, more than any table may hold; "
                f"the file was not read past line {exc.lineno}")
    return f"{type(exc).__name__}: {exc}"
