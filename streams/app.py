"""The faust app: wiring only. One agent feeds batches of the visits topic to the pipeline's batch step."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.types import TP

from domain.batch import Delivery
from healthbook import kafka
from healthbook import observability as metrics
from healthbook.config import Settings
from schemas import topics
from schemas.headers import retry_of
from streams.batch_step import Prechecked
from streams.batches import unacked_batches
from streams.fail_stop import leave_mid_batch, stop_worker
from streams.pipeline import VisitPipeline

log = logging.getLogger(__name__)


def _faust_app(settings: Settings, broker: kafka.Broker, partitions: int) -> faust.App:
    """The faust app itself: the broker, its login, and settings that keep a SIGKILLed worker's absence short."""
    login = broker.login
    fetch_bytes = broker.largest_message
    credentials = None if login.protocol == "PLAINTEXT" else faust.SASLCredentials(
        username=login.user, password=login.password, ssl_context=login.tls(), mechanism="SCRAM-SHA-512")
    datadir = settings.worker_data_dir / settings.worker_app_id  # faust's default is the current directory
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust makes only the last folder
    return faust.App(
        settings.worker_app_id,
        broker=f"kafka://{broker.bootstrap}",
        broker_credentials=credentials,
        store="memory://",
        datadir=datadir,
        topic_partitions=partitions,
        topic_replication_factor=settings.replication.factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        consumer_metadata_max_age_ms=kafka.METADATA_MAX_AGE_MS,  # see there: a member assigned nothing waits this long
        consumer_max_fetch_size=fetch_bytes,  # a visit as large as the topic takes is fetched, never skipped
        producer_max_request_size=fetch_bytes,
        producer_acks=-1,
        # No linger (faust's default) for the changelog: lingering 5 ms cut faust's CPU a visit with the table
        # from 418 to 288 µs (benchmarks.faust_only), but widened the time the book is ahead of the table,
        # and 'worker killed' then once ended with a visit in the book and not in the table (README, issue 23).
        # A SIGKILLed worker leaves the group only when its session times out: keep that short.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="json",  # the table's values; the visits topic says raw itself
        logging_config=metrics.json_logging_config() if settings.log_format == "json" else None,
    )


def create_app(settings: Settings, broker: kafka.Broker) -> faust.App:
    """Build the worker's faust app from settings and the broker it reaches."""
    partitions = topics.VISITS.partitions_for(settings.visit_partitions)
    app = _faust_app(settings, broker, partitions)
    visits = app.topic(settings.topics.visits, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions)
    # Keyed like the visits topic and placed by the same partitioner, so each changelog
    # partition holds exactly the citizens of the matching visits partition.
    changelog = {**topics.CHANGELOG_CONFIG, **settings.replication.config()}
    versions = app.tables.add(VersionsTable(app, name=topics.DEDUP_TABLE, default=None, beacon=app.tables.beacon,
                                            partitions=partitions, use_partitioner=True, key_type=bytes,
                                            extra_topic_configs=changelog))
    pipeline = VisitPipeline(settings, broker, _KeyedTable(versions),
                             lambda partition: app.consumer.highwater(TP(settings.topics.visits, partition)),
                             versions.written)
    app.add_dependency(pipeline)
    # Each batch sets up to batch_size changelog entries at once; faust's default buffer of 100 makes
    # the agent wait on every flush (faust-streaming issue 173).
    app.producer.buffer.max_messages = max(10_000, settings.batch_size * 4)

    @app.agent(visits, name="project-visits")
    async def project_visits(stream: faust.StreamT) -> None:
        """Check each batch while the one before is written; acknowledge a batch's events once it is written."""
        writing: asyncio.Future[None] | None = None

        async def write(events: list[Any], deliveries: list[Delivery], prechecked: Prechecked) -> None:
            try:
                counts = await pipeline.process(deliveries, prechecked)
                await versions.written()
            except asyncio.CancelledError:
                leave_mid_batch()
            except Exception:  # at once, not when the agent next awaits this write
                stop_worker("the worker cannot go on; stopping without committing the current batch")
            for event in events:  # only now may faust commit their offsets
                await stream.ack(event)
            log.info("batch %s", dict(counts), extra={"worker_id": settings.worker_app_id,
                                                     "offsets": offset_ranges(deliveries)})

        try:
            async for events in unacked_batches(stream, settings.batch_size, settings.batch_within_seconds):
                deliveries = [delivery_of(event.message) for event in events]
                prechecked = await pipeline.precheck(deliveries)
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(write(events, deliveries, prechecked))
            if writing is not None:
                await writing
        except asyncio.CancelledError:
            if writing is not None and not writing.done():
                leave_mid_batch()
            raise
        except Exception:
            stop_worker("the worker cannot go on; stopping without committing the current batch")

    app.healthbook_pipeline = pipeline  # type: ignore[attr-defined]
    return app


class VersionsTable(faust.Table):  # type: ignore[misc]
    """The deduplication table, which keeps each changelog write it sends until the agent waits for it.

    faust acks a batch's events when the agent asks for the next batch, and flushes its producer before
    committing them; but that flush gives up after 0.1 s without a send, and misses a message taken from
    its buffer but not yet handed to the Kafka client. Offsets were then committed with table writes
    unsent, and a worker SIGKILLed at that moment left the table behind the book for good. The agent
    waits for each write's own acknowledgement instead.
    """

    _unconfirmed: list[Any] | None = None

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        """Send a table write to the changelog, as faust does, and keep its future."""
        sent = super().send_changelog(*args, **kwargs)
        if self._unconfirmed is None:
            self._unconfirmed = []
        self._unconfirmed.append(sent)
        return sent

    async def written(self) -> None:
        """Wait until the broker has acknowledged every table write sent so far.

        The agent and the card resolver both wait here: each waits for every write, then only the
        acknowledged ones are forgotten, so neither can take the other's unacknowledged writes away.
        """
        pending = list(self._unconfirmed or [])
        if pending:
            await asyncio.gather(*pending)
        self._unconfirmed = [sent for sent in self._unconfirmed or [] if not sent.done()]


def offset_ranges(deliveries: list[Delivery]) -> dict[int, list[int]]:
    """The first and last offset of each partition in a batch, for the operator reading the log."""
    ranges: dict[int, list[int]] = {}
    for d in deliveries:
        first, last = ranges.setdefault(d.partition, [d.offset, d.offset])
        ranges[d.partition] = [min(first, d.offset), max(last, d.offset)]
    return ranges


def delivery_of(message: Any) -> Delivery:
    """A faust message as the batch step reads it."""
    return Delivery(message.topic, message.partition, message.offset, int(message.timestamp * 1000),
                    message.key, message.value, retry_of(message.headers))


class _KeyedTable:
    """Adapts the faust table, whose raw keys are bytes, to personal-ID strings."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, personal_id: str) -> dict[str, int] | None:
        return self._table.get(personal_id.encode())

    def __setitem__(self, personal_id: str, versions: dict[str, int]) -> None:
        self._table[personal_id.encode()] = versions
