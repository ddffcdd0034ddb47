"""A query consumer whose group moved its partitions while it was away goes on answering: found by the soak."""

from __future__ import annotations

import logging

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from consumers.query import RequestLoop

REQUESTS = TopicPartition("integration.requests", 0)


class MovedAwayConsumer:
    """A consumer whose commit the coordinator refuses: the group rebalanced while it was paused."""

    def __init__(self) -> None:
        self.commits = 0

    def assignment(self) -> set[TopicPartition]:
        return {REQUESTS}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits += 1
        raise CommitFailedError("Commit cannot be completed since the group has already rebalanced")


async def test_a_commit_refused_after_a_rebalance_is_logged_and_the_loop_goes_on(caplog):
    consumer = MovedAwayConsumer()
    loop = RequestLoop("integration.replies", None, None, consumer, None)  # type: ignore[arg-type]
    loop.offsets.read(REQUESTS, 41)
    loop.offsets.answered(REQUESTS, 41)
    with caplog.at_level(logging.WARNING, logger="consumers.query"):
        await loop._commit()  # before: CommitFailedError ended the query consumer (exit 1 in the soak)
    assert consumer.commits == 1
    assert "rebalanced before offsets {'integration.requests[0]': 42}" in caplog.text
    await loop._commit()  # nothing left to commit: the refused offsets are not retried into a stale group
    assert consumer.commits == 1
