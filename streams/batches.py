"""Batches of a faust stream's events that the agent acknowledges itself, once their batch is written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust


async def unacked_batches(stream: faust.StreamT, most: int, within: float) -> AsyncIterator[list[Any]]:
    """Up to `most` events at a time, or what came within `within` seconds; none of them acknowledged.

    faust's take_events acknowledges a batch when the agent asks for the next one, and stops filling
    the next while the agent works on one. Here the next batch fills while the agent still writes the
    last, and an event is acknowledged (so its offset may be committed) only when the agent calls
    `stream.ack` after its batch is written: the applied-offset guarantee does not depend on the order
    the agent asks for batches in. At most one batch waits here beside the ones the agent holds.
    """
    waiting: list[Any] = []
    full, room = asyncio.Event(), asyncio.Event()
    room.set()

    async def add(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("a stream processor ran without a current event")
        waiting.append(event)
        if len(waiting) >= most:
            full.set()
            room.clear()
            await stream.wait(room)  # type: ignore[arg-type]  # mode's Event annotation; asyncio's works
        return value

    acks_before = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # consumed in the background, as take_events does
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within)  # type: ignore[arg-type]
            if waiting:
                batch = waiting[:]
                waiting.clear()
                full.clear()
                room.set()
                yield batch
    finally:
        stream.enable_acks = acks_before
        stream._processors.remove(add)
