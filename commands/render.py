"""Readable terminal views of a health-book reply, the outcome counts and the dead-letter topic."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from consumers.dead_letters import DeadLetterEntry
from consumers.release_check import CheckReport
from consumers.status import Status
from domain.replies import Reply
from domain.sentences import REFUSED, VISIT_TYPES, day, minute, money
from schemas.outcomes import REJECTED_PREFIX, Outcome
from schemas.refusal_codes import ReplyStatus


def plain_row(table: Table, *values: object) -> None:
    """Add a row whose cells are shown as written: what senders wrote is never read as rich markup."""
    table.add_row(*(Text(str(value)) for value in values))


def console() -> Console:
    """A console for reports: the terminal's width, or 140 columns when output goes to a file or a log."""
    return Console(width=None if sys.stdout.isatty() else 140)


def health_book(console: Console, reply: Reply, title: str) -> None:
    """Print a reply as the citizen would read it: one row per visit, or the service's message."""
    if reply.status != ReplyStatus.OK:
        _refusal(console, reply)
        return
    if not reply.visits:
        console.print(f"[bold]{escape(title)}[/]\n  {escape(reply.message)}")
        return
    table = Table(title=Text(title), show_lines=True, title_justify="left")
    for column in ("Cơ sở KCB", "Vào / Ra", "Loại", "Chẩn đoán", "Thuốc", "Kết quả CLS", "BHYT / người bệnh trả"):
        table.add_column(column, overflow="fold")
    for visit in reply.visits:
        plain_row(
            table,
            visit.facility_code,
            f"{minute(visit.admitted_at)}\n{minute(visit.discharged_at)}"
            + (f"\nhẹn {day(visit.follow_up_date)}" if visit.follow_up_date else ""),
            VISIT_TYPES.get(visit.visit_type, str(visit.visit_type)),
            f"{', '.join(visit.diagnosis_codes)}\n{visit.diagnosis_names}",
            "\n".join(f"{m.name} {m.strength or ''}: {m.dose or ''}" for m in visit.medicines),
            "\n".join(f"{r.name}: {r.value} {r.unit or ''} ({r.conclusion or '-'})" for r in visit.results) or "-",
            f"{money(visit.insurance_paid)}\n{money(visit.patient_paid)}",
        )
    console.print(table)
    console.print(reply.message, markup=False)


def _refusal(console: Console, reply: Reply) -> None:
    console.print(f"[bold red]{REFUSED.citizen()}[/] ({escape(str(reply.refusal_code))}): {escape(reply.message)}")


def fhir_summary(console: Console, reply: Reply, title: str) -> None:
    """Print how many resources of each kind a FHIR Bundle reply holds, or the refusal."""
    if reply.status != ReplyStatus.OK or reply.fhir_bundle is None:
        _refusal(console, reply)
        return
    kinds = Counter(e["resource"]["resourceType"] for e in json.loads(reply.fhir_bundle)["entry"])
    table = Table(title=Text(title), title_justify="left", min_width=len(title) + 4)
    table.add_column("resource")
    table.add_column("count", justify="right")
    for kind, count in sorted(kinds.items()):
        plain_row(table, kind, str(count))
    console.print(table)


def outcome_summary(console: Console, counts: dict[str, int]) -> bool:
    """Print consumed, accepted, duplicates and rejections by reason; return whether they add up."""
    table = Table(title="Pipeline outcomes", title_justify="left")
    table.add_column("outcome")
    table.add_column("messages", justify="right")
    rejected = {k: v for k, v in sorted(counts.items()) if k.startswith(REJECTED_PREFIX)}
    kept = (Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.PENDING)
    for name in (Outcome.CONSUMED, *kept):
        plain_row(table, name, str(counts.get(name, 0)))
    for name, value in rejected.items():
        plain_row(table, name, str(value))
    console.print(table)
    total = sum(counts.get(k, 0) for k in kept) + sum(rejected.values())
    consumed = counts.get(Outcome.CONSUMED, 0)
    adds_up = total == consumed
    mark = "[green]✓[/]" if adds_up else "[red]✗[/]"
    console.print(f"accepted + duplicate + pending + rejected = {total}, consumed = {consumed} {mark}")
    return adds_up


def dead_letters(console: Console, records: list[dict[str, Any]]) -> None:
    """Print the dead-letter topic: where each message came from and why it was refused."""
    table = Table(title="Dead-letter topic", title_justify="left")
    for column in ("source", "reason", "clinic", "why", "bytes"):
        table.add_column(column, overflow="fold")
    for record in records:
        plain_row(
            table,
            f"{record['source_topic']}[{record['source_partition']}]@{record['source_offset']}",
            record["reason_code"], record["clinic_code"] or "-", record["reason"],
            str(len(record["original_value"] or b"")),
        )
    console.print(table)


def ingest_reports(console: Console, reports: list[Any]) -> None:
    """Print one line per file (signature, HOSO read, valid, published, rejected), then every problem's place."""
    for report in reports:
        signature = f"XML signature {report.signature}" if report.signature else "not read"
        console.print(
            f"{report.file}: {signature}; {report.read} HOSO read, {report.valid} valid, {report.published} published "
            f"({report.already_published} already published before), {report.rejected_hoso} rejected",
            markup=False, highlight=False, soft_wrap=True)
    repeats = sum(r.already_published for r in reports)
    if repeats:
        console.print(f"{repeats} visit(s) were already published with the same content: the pipeline counts them "
                      "as duplicates and the health book does not change.", soft_wrap=True)
    for report in reports:
        if report.file_error:
            console.print(f"{report.file}: {report.file_error}", markup=False, highlight=False, soft_wrap=True)
        for rejection in report.rejected:
            console.print(rejection.line(), markup=False, highlight=False, soft_wrap=True)


def analytics(console: Console, counts: Any, top: int, title: str) -> None:
    """Print the most frequent (diagnosis, province, month) counts."""
    console.print(title)
    table = Table()
    for column in ("ICD-10", "province", "month", "visits"):
        table.add_column(column, justify="right" if column == "visits" else "left")
    for (code, province, month), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]:
        plain_row(table, code, province, month, str(n))
    console.print(table)


def release_check(console: Console, report: CheckReport) -> None:
    """Print the release checker's findings, a line per subscriber (they read the same in a log), then the links."""
    console.print(Text("Analytics release check"))
    for s in report.subscribers:
        people = "no pseudonyms" if s.smallest_cell_people is None else f"{s.smallest_cell_people} people"
        decided = s.released + s.generalised + s.suppressed
        console.print(Text(
            f"{s.subscriber} (k={s.k}): {s.records} records in {s.cells} cells; smallest cell "
            f"{s.smallest_cell_records} records ({people}); cells under k: {s.cells_under_k}; on its topic twice: "
            f"{s.doubled}; released "
            f"{s.released} as given, {s.generalised} widened, {s.suppressed} suppressed: suppressed share "
            f"{s.suppressed_share:.1%} of {decided}"), soft_wrap=True)
    for (a, b), n in report.shared_pseudonyms.items():
        console.print(Text(f"pseudonyms shared by {a} and {b}: {n}; visit_refs shared: "
                           f"{report.shared_visit_refs[(a, b)]}"), soft_wrap=True)
    console.print(Text("release holds" if not report.problems else "release BROKEN: " + "; ".join(report.problems)),
                  soft_wrap=True)


def month_chart(console: Console, months: list[tuple[str, int]], title: str, width: int = 50) -> None:
    """Print visits per month as bars."""
    console.print(Text(title))
    most = max((n for _, n in months), default=0)
    for month, n in months:
        bar = "█" * max(1, round(n / most * width)) if most else ""
        console.print(Text(f"{month[:4]}-{month[4:]}  {bar} {n}"))
    if not months:
        console.print(Text("no visits of this chapter landed"))


def dead_letter_entries(console: Console, entries: list[DeadLetterEntry]) -> None:
    """Print dead-letter entries for an operator: where each sits, when and why it failed."""
    table = Table(title=f"Dead letters ({len(entries)})", title_justify="left")
    for column in ("offset", "failed at", "reason", "clinic", "source", "why"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        r = entry.record
        place = f"{entry.partition}:{entry.offset}" + (" (retried, failed again)" if entry.failed_again else "")
        plain_row(table, place, str(r["failed_at"])[:19], r["reason_code"], r["clinic_code"] or "-",
                  f"{r['source_topic']}[{r['source_partition']}]@{r['source_offset']}", r["reason"])
    console.print(table)


def status(console: Console, topic: str, found: Status) -> None:
    """Print lag per partition, the outcome counts, visits waiting for a card and the last error."""
    table = Table(title=f"{topic}: lag per partition", title_justify="left")
    for column in ("partition", "end offset", "applied", "lag"):
        table.add_column(column, justify="right")
    for p in found.partitions:
        plain_row(table, str(p.partition), str(p.end_offset), str(p.applied), str(p.lag))
    console.print(table)
    outcome_summary(console, found.counts)
    console.print(f"visits waiting for a BHYT card mapping: {found.pending_visits}")
    for topic, kinds in found.ignored.items():
        text = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) if kinds else "none"
        console.print(f"{topic}: records ignored as unverifiable: {text}", markup=False)
    if found.revocation_problems:
        console.print("revocation lists: FAILING CLOSED - what these CAs vouch for is refused until fixed:",
                      style="bold red")
        for problem in found.revocation_problems:
            console.print(f"  {problem}", markup=False)
    else:
        console.print("revocation lists: every trusted CA's list is verified and current")
    error = found.last_error
    console.print("last error: " + (f"{error['at']:%Y-%m-%d %H:%M:%S} {error['worker_id']}: {error['message']}"
                                    if error else "none recorded"), markup=False)


def effective_settings(console: Console, rows: list[tuple[str, str, str]], names: list[tuple[str, str]]) -> None:
    """The settings a process would run with (secrets masked), and the broker names they give."""
    table = Table(title="effective settings", title_justify="left")
    for column in ("setting", "value", "from"):
        table.add_column(column)
    for row in rows:
        plain_row(table, *row)
    console.print(table)
    named = Table(title="names on the broker", title_justify="left")
    named.add_column("what")
    named.add_column("name")
    for row in names:
        plain_row(named, *row)
    console.print(named)
