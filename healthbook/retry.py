"""Waiting out an unreachable PostgreSQL: back off, keep the place, resume by itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF_SECONDS = 30.0

# Refused or reset connections, a server starting up or shutting down, a connection that died under us.
UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
               asyncpg.InterfaceError)


async def while_unreachable(what: str, attempt: Callable[[], Awaitable[T]],
                            on_wait: Callable[[float], None] | None = None) -> T:
    """Run attempt until it succeeds, backing off from 0.5 s to 30 s while PostgreSQL is unreachable."""
    delay = 0.5
    waited = 0.0
    while True:
        try:
            return await attempt()
        except UNREACHABLE as exc:
            log.warning("cannot %s (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            if on_wait:
                on_wait(waited)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
