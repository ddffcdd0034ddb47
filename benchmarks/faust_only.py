"""faust's own cost: the worker's faust app and batching over the visits topic, with no work in the batches.

Run by `benchmarks.ceilings` in a process of its own, with the settings of the worker it compares against.
It builds the same app (`streams.app._faust_app`: broker, login, fetch sizes), takes the same unacked
batches (`streams.batches.unacked_batches`), acknowledges every event as the worker does once a batch is
written, and does nothing else. With --table it also sets one entry per citizen of each batch in a
changelog-backed table and waits for the changelog's acknowledgements, as the worker's deduplication table
does. What it costs, the worker pays on top of its batch step's work. When it has
taken `--expect` events it writes one JSON line to --out (the events after its first batch, the seconds
from that batch to the last, and its CPU seconds over the same span) and stops.

Usage: python -m benchmarks.faust_only --expect N --out FILE [--table]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import faust

from benchmarks.end_to_end import own_cpu_seconds
from healthbook import kafka
from healthbook.config import Settings
from healthbook.gc_tuning import tune_for_service
from schemas import topics
from streams.app import VersionsTable, _faust_app
from streams.batches import unacked_batches


def build(settings: Settings, expect: int, out: Path, with_table: bool) -> faust.App:
    """The worker's faust app with an agent that takes and acknowledges batches and does nothing else."""
    broker = kafka.Broker.of(settings)
    partitions = topics.VISITS.partitions_for(settings.visit_partitions)
    app = _faust_app(settings, broker, partitions)
    visits = app.topic(settings.topics.visits, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions)
    table = app.tables.add(VersionsTable(
        app, name=f"{topics.DEDUP_TABLE}-faust-only", default=None, beacon=app.tables.beacon,
        partitions=partitions, use_partitioner=True, key_type=bytes,
        extra_topic_configs={**topics.CHANGELOG_CONFIG, **settings.replication.config()})) if with_table else None
    app.producer.buffer.max_messages = max(10_000, settings.batch_size * 4)
    seen: dict[str, Any] = {"events": 0, "first": None, "counted_from": 0, "cpu_at_first": 0.0}

    @app.agent(visits, name="faust-only")
    async def take(stream: faust.StreamT) -> None:
        async for events in unacked_batches(stream, settings.batch_size, settings.batch_within_seconds):
            if seen["first"] is None:  # timed from the first batch taken, as the worker from its first row
                seen["first"], seen["counted_from"], seen["cpu_at_first"] = \
                    time.perf_counter(), len(events), own_cpu_seconds()
            if table is not None:  # as the worker remembers a batch: one entry per citizen in it
                for key, offset in {event.message.key: event.message.offset for event in events}.items():
                    table[key] = {"v": offset}
                await table.written()
            for event in events:
                await stream.ack(event)
            seen["events"] += len(events)
            if seen["events"] >= expect:
                out.write_text(json.dumps({"events": seen["events"] - seen["counted_from"],
                                           "cpu_seconds": own_cpu_seconds() - seen["cpu_at_first"],
                                           "seconds": time.perf_counter() - seen["first"]}))
                os._exit(0)  # the figure is written; nothing of this throwaway app needs a clean stop

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="write the deduplication table as the worker does")
    args = parser.parse_args()
    app = build(Settings(), args.expect, args.out, args.table)
    tune_for_service()
    faust.Worker(app, loglevel="info").execute_from_commandline()  # the worker's level


if __name__ == "__main__":
    main()
