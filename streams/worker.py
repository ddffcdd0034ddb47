"""Runs the faust worker: python -m streams.worker (or 'healthbook worker')."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from faust.worker import Worker as FaustWorker

from healthbook import kafka
from healthbook.config import Settings
from healthbook.gc_tuning import tune_for_service
from healthbook.retry import is_broker_unreachable
from streams.app import create_app

log = logging.getLogger(__name__)


class Worker(FaustWorker):
    """faust's worker, remembering why its start failed."""

    start_failure: BaseException | None = None

    async def start(self) -> None:
        try:
            await super().start()
        except Exception as exc:
            self.start_failure = exc
            raise


def main(settings: Settings | None = None, loglevel: str = "info") -> None:
    """Start the worker in the foreground until SIGINT or SIGTERM; hold while the broker is away at start."""
    settings = settings or Settings()
    broker = kafka.Broker.of(settings)
    app = create_app(settings, broker)
    tune_for_service()
    worker = Worker(app, loglevel=loglevel)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        failure = worker.start_failure
        if failure is None or not is_broker_unreachable(failure):
            raise
        # faust cannot start an app twice in one process; the same process starts afresh instead, so a
        # supervisor sees no exit and nothing was consumed before the start failed
        log.warning("the worker could not reach the broker while starting (%s); starting again once it answers",
                    type(failure).__name__)
        asyncio.run(until_the_broker_answers(broker, settings.topics.visits))
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


async def until_the_broker_answers(broker: kafka.Broker, visits: str) -> None:
    """Return once the broker describes the visits topic, or fails in a way the fresh start will report."""
    with contextlib.suppress(Exception):
        await kafka.while_broker_away("describe the visits topic", lambda: kafka.partitions_of(broker, visits))


if __name__ == "__main__":
    main()
