"""The dedup table's wait for its changelog writes, which the agent and the card resolver share."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.app import VersionsTable


async def test_each_waiter_waits_for_every_unacknowledged_write_even_while_the_other_waits_too():
    loop = asyncio.get_running_loop()
    write = loop.create_future()
    table = SimpleNamespace(_unconfirmed=[write])
    resolver = asyncio.create_task(VersionsTable.written(table))
    await asyncio.sleep(0)
    agent = asyncio.create_task(VersionsTable.written(table))
    await asyncio.sleep(0.01)
    assert not agent.done(), "the agent may not go on while a write the resolver also waits for is unacknowledged"
    write.set_result(None)
    await asyncio.gather(resolver, agent)
    assert table._unconfirmed == [], "acknowledged writes are forgotten"
