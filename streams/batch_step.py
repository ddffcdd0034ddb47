"""The one batch step of the visits topic, run by the worker and by replay alike.

Validate, resolve identity, dead-letter, deduplicate and write one batch atomically with its
applied offsets. Messages below a partition's applied offset were applied before a crash or
rebalance: they only bring the deduplication table up to date. A batch that another worker
advanced meanwhile is redone.

Failures come in three kinds. A message's content (it breaks a rule, or PostgreSQL refuses its
values) dead-letters that message and the batch goes on. Unreachable infrastructure is waited
out. Anything else is a bug: the worker records the batch's offsets and stops; after the restart
that batch is retried in halves down to the single message, which is dead-lettered as
internal_error, so a bug never stops a partition twice on the same message.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from domain.batch import BatchPlan, Delivery, plan_batch
from domain.identity import IdentityDirectory
from domain.keyring import Keyring
from domain.rows import VisitRow, WeightedRow
from domain.sensitive_visit import SensitivePolicy
from domain.validation import Accepted, Rejected, SigningWindow, validate_safely
from healthbook import kafka
from healthbook.retry import CONTENT_REFUSALS, is_infrastructure, while_unreachable
from healthbook.store import OffsetsMoved
from schemas import keys
from schemas.dead_letter_reasons import RETRY_AFTER_REGISTRY_CATCH_UP, DeadLetterReason
from schemas.headers import retry_of
from schemas.outcomes import Outcome
from streams.dead_letters import original_append_time
from streams.outlets import Outlets

log = logging.getLogger(__name__)


RangeReader = Callable[[str, int, int, int], Awaitable[list[Delivery]]]  # topic, partition, start, end
Prechecked = dict[tuple[int, int], "Accepted | Rejected"]  # verdicts worked out ahead, by partition and offset


def delivery_of_record(record: ConsumerRecord) -> Delivery:
    """An aiokafka record as the batch step reads it."""
    return Delivery(record.topic, record.partition, record.offset, record.timestamp, record.key, record.value,
                    retry_of(record.headers))


def topic_range_reader(broker: kafka.Broker) -> RangeReader:
    """Reads the deliveries of one partition's offsets [start, end) back from the broker."""
    async def read(topic: str, partition: int, start: int, end: int) -> list[Delivery]:
        return [delivery_of_record(r) for r in await kafka.read_range(broker, topic, partition, start, end)]
    return read


class GapUnfilled(KafkaError):
    """Messages a batch skipped could not be read back from the broker: hold, as for an unreachable broker."""


class BatchStore(Protocol):
    """Where a batch is written with its offsets (PostgreSQL's PostgresBatchStore, or a fake in unit tests)."""

    async def applied_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]: ...

    async def write_batch(self, book: list[WeightedRow], pending: list[WeightedRow], counts: Counter[str],
                          topic: str, expected: dict[int, int], advanced: dict[int, int]) -> Counter[str]: ...

    async def refused_rows(self, rows: list[tuple[VisitRow, bool]]) -> dict[int, str]: ...

    async def versions_of(self, visits: list[tuple[str, str]]) -> list[tuple[str, str, str, int]]: ...

    async def citizen_versions(self, personal_ids: list[str]) -> list[tuple[str, str, str, int]]: ...

    async def record_suspect_batch(self, topic: str, ranges: dict[int, tuple[int, int]], error: str) -> None: ...

    async def clear_suspect_batches(self, topic: str, applied: dict[int, int]) -> None: ...


class VersionTable(Protocol):
    """The deduplication table: personal ID -> {facility/MA_LK: version} (a faust table, or a dict in replay)."""

    def get(self, personal_id: str) -> dict[str, int] | None: ...

    def __setitem__(self, personal_id: str, versions: dict[str, int]) -> None: ...


@dataclass
class StepResult:
    """What one batch did: its outcome counts, the deliveries it applied, and how long applying took."""

    counts: Counter[str]
    applied: list[Delivery] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: StepResult) -> StepResult:
        """Both parts of a batch applied in halves."""
        counts = Counter(self.counts)
        counts.update(other.counts)
        return StepResult(counts, self.applied + other.applied, self.seconds + other.seconds)


async def _nothing_to_catch_up() -> None:
    return None


@dataclass
class Checks:
    """What each message is checked against: clinic keys, card mappings, the signing window."""

    keyring: Keyring
    identity: IdentityDirectory
    signing_window: SigningWindow
    registry_catch_up: Callable[[], Awaitable[None]] = _nothing_to_catch_up  # read registry records published since
    sensitive: SensitivePolicy | None = None  # when set, each accepted visit is judged once, here, for every use


@dataclass
class StepHooks:
    """What the worker is told while a batch runs: held for the database, resumed, cards visits wait for."""

    on_hold: Callable[[float], None] = lambda waited: None
    on_resumed: Callable[[float], Awaitable[None]] | None = None
    on_waiting: Callable[[set[str]], None] = lambda cards: None


@dataclass
class BatchStep:
    """Everything one batch needs: where it is written, what it is checked against, where side records go."""

    topic: str
    store: BatchStore
    checks: Checks
    versions: VersionTable
    outlets: Outlets
    read_range: RangeReader
    hooks: StepHooks = field(default_factory=StepHooks)
    isolate_at_once: bool = False  # replay has no restart to wait for
    dead_letter_topic: str | None = None  # where re-driven messages' original append times are read
    suspects: list[tuple[int, int, int]] = field(default_factory=list)  # (partition, first, last) that failed before

    async def precheck(self, deliveries: Sequence[Delivery]) -> Prechecked:
        """Each message's verdict (decode, signature, rules), worked out before its batch is applied.

        The worker checks the next batch while the last one is still being written; the verdicts depend
        only on the message and the registries, never on what the book or the table hold.
        """
        messages = first_deliveries(deliveries)
        return {(m.partition, m.offset): v for m, v in zip(messages, await self._checked(messages), strict=True)}

    async def run(self, deliveries: Sequence[Delivery], prechecked: Prechecked | None = None) -> StepResult:
        """Apply one batch (each record once, in order) and return what it did."""
        messages = first_deliveries(deliveries)
        known = prechecked or {}
        if self._suspected(messages):
            log.warning("isolating a batch of %d messages that failed before", len(messages))
            result = await self._isolating(messages, known)
            await self._clear_suspects(messages)
            return result
        return await (self._isolating(messages, known) if self.isolate_at_once else self._run_once(messages, known))

    async def _isolating(self, messages: list[Delivery], known: Prechecked) -> StepResult:
        """Apply in halves until the failing message stands alone, then dead-letter it as internal_error."""
        try:
            return await self._run_once(messages, known)
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            if len(messages) == 1:
                log.error("dead-lettering %s[%d]@%d as internal_error (%s)", messages[0].topic,
                          messages[0].partition, messages[0].offset, type(exc).__name__)
                return await self._run_once(messages, known, failure=exc)
            half = len(messages) // 2
            return (await self._isolating(messages[:half], known)).add(await self._isolating(messages[half:], known))

    async def _run_once(self, messages: list[Delivery], known: Prechecked,
                        failure: Exception | None = None) -> StepResult:
        while True:
            expected = await while_unreachable("read applied offsets", partial(self._applied, messages))
            replayed = [m for m in messages if m.offset < expected[m.partition]]
            todo = await self._without_gaps([m for m in messages if m.offset >= expected[m.partition]], expected)
            if replayed and failure is None:
                healed = await self._heal(replayed, known)
                log.info("%d messages were applied before (below the book's offsets %s); %d table entries refreshed",
                         len(replayed), {p: expected[p] for p in sorted({m.partition for m in replayed})}, healed)
            if not todo:
                return StepResult(Counter({Outcome.REPLAYED: len(replayed)}))
            started = time.monotonic()
            try:
                counts = await self._apply(todo, expected, known, failure)
            except OffsetsMoved as moved:
                log.warning("redoing a batch: %s", moved)
                continue
            return StepResult(counts, todo, time.monotonic() - started)

    async def _heal(self, replayed: list[Delivery], known: Prechecked) -> int:
        """Bring the table up to what the book holds for messages applied before; return the entries refreshed."""
        plan, from_book = await self._plan(replayed, await self._verdicts(replayed, known))
        return self._remember(*await self._whole_book(plan, from_book))

    async def _apply(self, messages: list[Delivery], expected: dict[int, int], known: Prechecked,
                     failure: Exception | None) -> Counter[str]:
        verdicts = await self._verdicts(messages, known) if failure is None else \
            [_internal_error(failure)] * len(messages)
        plan, from_book = await self._plan(messages, verdicts)
        await self.outlets.dead_letters(plan.rejected)
        await self.outlets.deidentified([(item.event, item.accepted.sensitivity) for item in plan.fresh])
        advanced = {p: max(m.offset for m in messages if m.partition == p) + 1 for p in {m.partition for m in messages}}
        try:
            counts = await self._write_waiting_out_the_database(plan, expected, advanced)
        except CONTENT_REFUSALS:
            plan = await self._without_refused_rows(plan)
            counts = await self._write_waiting_out_the_database(plan, expected, advanced)
        self._remember(plan, from_book)
        self.hooks.on_waiting({item.accepted.event.card_number for item in plan.waiting})
        return counts

    async def _without_gaps(self, todo: list[Delivery], expected: dict[int, int]) -> list[Delivery]:
        """The batch as one unbroken run per partition, from its applied offset to its last delivered message.

        A batch never advances a partition past a message it did not apply. When the consumer skipped
        offsets (its committed offset ahead of the book's, or a seek while events were buffered, at the
        start of a batch or inside it), the skipped messages are read back from the topic.
        """
        runs: list[Delivery] = []
        for partition in sorted({m.partition for m in todo}):
            delivered = {m.offset: m for m in todo if m.partition == partition}
            wanted = range(expected[partition], max(delivered) + 1)
            if len(delivered) == len(wanted):
                runs += [delivered[offset] for offset in wanted]
                continue
            log.warning("%s[%d]: %d of offsets %d to %d were not delivered; reading them from the topic",
                        self.topic, partition, len(wanted) - len(delivered), wanted.start, wanted.stop - 1,
                        extra={"topic": self.topic, "partition": partition, "offset": wanted.start})
            read = {m.offset: m for m in await self.read_range(self.topic, partition, wanted.start, wanted.stop)}
            run = [delivered.get(offset) or read.get(offset) for offset in wanted]
            if any(m is None for m in run):
                raise GapUnfilled(f"{self.topic}[{partition}]: offsets {wanted.start} to {wanted.stop - 1} could "
                                  "not all be read back; nothing of the batch is applied")
            runs += run  # type: ignore[arg-type]
        return runs

    async def _write_waiting_out_the_database(self, plan: BatchPlan, expected: dict[int, int],
                                              advanced: dict[int, int]) -> Counter[str]:
        waited_for: list[float] = []

        def holding(waited: float) -> None:
            waited_for.append(waited)
            self.hooks.on_hold(waited)
            log.warning("holding %d messages at %s for %.0fs until PostgreSQL answers; nothing is committed",
                        plan.deliveries, {p: expected[p] for p in advanced}, waited)

        counts = await while_unreachable("write the health book", partial(self._write, plan, expected, advanced),
                                         holding)
        if waited_for and self.hooks.on_resumed:
            await self.hooks.on_resumed(max(waited_for))
        return counts

    async def _without_refused_rows(self, plan: BatchPlan) -> BatchPlan:
        """Find the visits whose values PostgreSQL refuses, dead-letter them, and keep the rest of the batch."""
        refused = await while_unreachable("find the rows PostgreSQL refuses", partial(
            self.store.refused_rows, plan.rows_to_write()))
        kept = plan.without(refused, self.versions.get)
        await self.outlets.dead_letters(kept.rejected[len(plan.rejected):])
        return kept

    async def _write(self, plan: BatchPlan, expected: dict[int, int], advanced: dict[int, int]) -> Counter[str]:
        return await self.store.write_batch(plan.book_rows(), plan.pending_rows(), plan.counts(), self.topic,
                                            expected, advanced)

    async def _applied(self, messages: list[Delivery]) -> dict[int, int]:
        return await self.store.applied_offsets(self.topic, sorted({m.partition for m in messages}))

    async def _verdicts(self, messages: list[Delivery], known: Prechecked) -> list[Accepted | Rejected]:
        """Each message's verdict: the one worked out before it was applied, or worked out now."""
        unknown = [m for m in messages if (m.partition, m.offset) not in known]
        found = dict(known)
        if unknown:
            found.update(zip(((m.partition, m.offset) for m in unknown), await self._checked(unknown), strict=True))
        return [found[m.partition, m.offset] for m in messages]

    async def _checked(self, messages: list[Delivery]) -> list[Accepted | Rejected]:
        appended = [await self._appended_at(m) for m in messages]
        checks = self.checks
        results = [validate_safely(m.key, m.value, checks.keyring, at, checks.signing_window)
                   for m, at in zip(messages, appended, strict=True)]
        if any(isinstance(r, Rejected) and r.code in RETRY_AFTER_REGISTRY_CATCH_UP for r in results):
            await checks.registry_catch_up()
            results = [
                validate_safely(m.key, m.value, checks.keyring, at, checks.signing_window)
                if isinstance(r, Rejected) and r.code in RETRY_AFTER_REGISTRY_CATCH_UP else r
                for m, r, at in zip(messages, results, appended, strict=True)
            ]
        if checks.sensitive is not None:
            for r in results:
                if isinstance(r, Accepted):  # just made here, so set in place
                    r.sensitivity = checks.sensitive.judge(r.event.record, clean_json=r.event.clean_json)
        return results

    async def _appended_at(self, message: Delivery) -> int:
        """When the broker first appended this message: for a re-driven dead letter, the original's append time.

        The time is taken from the worker's own dead-letter record, never from a header a sender could set;
        a re-drive whose dead letter cannot be read back is judged by its own append time.
        """
        if message.retry_of is None or self.dead_letter_topic is None:
            return message.timestamp_ms
        partition, offset = message.retry_of
        found = await while_unreachable("read a re-driven dead letter", partial(
            self.read_range, self.dead_letter_topic, partition, offset, offset + 1))
        original = original_append_time(found[0].value, message.value) if found else None
        return message.timestamp_ms if original is None else original

    async def _plan(self, messages: list[Delivery],
                    verdicts: list[Accepted | Rejected]) -> tuple[BatchPlan, dict[str, dict[str, int]]]:
        """Decide the batch against the table and, for visits the table would call fresh, against the book.

        The table is a cache of the book and may lag it: a worker killed after its batch's commit but
        before its table writes reached the changelog (the agent waits for them before faust may commit
        the batch's offsets, so the batch comes again and its replay heals the table), and visits the
        pending resolver moved into the book. The book's versions fill such gaps.
        """
        from_book = await self._book_versions(verdicts)
        plan = plan_batch(messages, verdicts, self.checks.identity,
                          lambda person: merged(self.versions.get(person), from_book.get(person)))
        return plan, from_book

    async def _book_versions(self, verdicts: Sequence[Accepted | Rejected]) -> dict[str, dict[str, int]]:
        """The book's versions of this batch's visits that the table would call new or newer, by citizen.

        The table is never ahead of what the book holds, or will hold once the visits waiting for a card are
        moved: when it says duplicate, so would the book; when it says fresh, the book is asked.
        """
        wanted: dict[tuple[str, str], str] = {}
        for verdict in verdicts:
            event = verdict.event if isinstance(verdict, Accepted) else None
            if event is not None and event.personal_id and \
                    (self.versions.get(event.personal_id) or {}).get(event.visit_key, -1) < event.version:
                wanted[(event.facility_code, event.visit_code)] = event.personal_id
        if not wanted:
            return {}
        rows = await while_unreachable("read the book's versions", partial(self.store.versions_of, list(wanted)))
        found: dict[str, dict[str, int]] = {}
        for facility, code, person, version in rows:
            if wanted.get((facility, code)) == person:
                found.setdefault(person, {})[keys.visit_key(facility, code)] = version
        return found

    async def _whole_book(self, plan: BatchPlan,
                          from_book: dict[str, dict[str, int]]) -> tuple[BatchPlan, dict[str, dict[str, int]]]:
        """For messages another worker applied: every visit the book holds of their citizens.

        This worker's table entry of such a citizen may be stale (it was paused, or cut off, while the
        partition moved on elsewhere); written back as it is, it would overwrite the newer entry in the
        changelog. Raised to the whole book first, it never drops a visit the book holds.
        """
        people = sorted(set(plan.versions_to_remember()) | set(from_book))
        if not people:
            return plan, from_book
        rows = await while_unreachable("read the book's versions of replayed citizens",
                                       partial(self.store.citizen_versions, people))
        whole = {person: dict(versions) for person, versions in from_book.items()}
        for facility, code, person, version in rows:
            whole.setdefault(person, {})[keys.visit_key(facility, code)] = version
        return plan, whole

    def _remember(self, plan: BatchPlan, from_book: dict[str, dict[str, int]] | None = None) -> int:
        """Record in the table the versions of what the health book now holds, healing what it had lost."""
        entries = plan.versions_to_remember()
        for person, versions in (from_book or {}).items():
            entries[person] = merged(entries.get(person), versions)
        for person, versions in entries.items():
            # Raised, never replaced: the card resolver may have raised the entry while this batch ran.
            self.versions[person] = merged(self.versions.get(person), versions)
        return len(entries)

    def _suspected(self, messages: list[Delivery]) -> bool:
        return any(p == m.partition and first <= m.offset <= last
                   for m in messages for p, first, last in self.suspects)

    async def record_suspect(self, deliveries: Sequence[Delivery], exc: BaseException) -> None:
        """Remember a batch the step failed on with a bug, so the restarted worker isolates it."""
        ranges = {p: (min(d.offset for d in deliveries if d.partition == p),
                      max(d.offset for d in deliveries if d.partition == p)) for p in {d.partition for d in deliveries}}
        await self.store.record_suspect_batch(self.topic, ranges, type(exc).__name__)

    async def _clear_suspects(self, messages: list[Delivery]) -> None:
        applied = await while_unreachable("read applied offsets", partial(self._applied, messages))
        await self.store.clear_suspect_batches(self.topic, applied)
        self.suspects = [(p, first, last) for p, first, last in self.suspects if last >= applied.get(p, 0)]


def _internal_error(failure: Exception) -> Rejected:
    return Rejected(DeadLetterReason.INTERNAL_ERROR,
                    f"healthbook failed on this message ({type(failure).__name__}) and set it aside so the rest of "
                    "its partition goes on: report it, and re-drive it once fixed")


def merged(table: dict[str, int] | None, book: dict[str, int] | None) -> dict[str, int]:
    """The table's versions of a citizen's visits, raised to the book's where the book knows more."""
    versions = dict(table or {})
    for visit_key, version in (book or {}).items():
        if versions.get(visit_key, 0) < version:
            versions[visit_key] = version
    return versions


def first_deliveries(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """The batch's messages, each record once: after a rebalance faust can hand one over twice."""
    seen: set[tuple[int, int]] = set()
    messages = []
    for delivery in deliveries:
        if (delivery.partition, delivery.offset) not in seen:
            seen.add((delivery.partition, delivery.offset))
            messages.append(delivery)
    return messages
