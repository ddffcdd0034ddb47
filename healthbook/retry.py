"""Telling failures apart: infrastructure to wait out, content to set aside, anything else a bug.

While PostgreSQL is unreachable, back off, keep the place and resume by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import (
    CoordinatorNotAvailableError,
    InvalidReplicationFactorError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NodeNotReadyError,
    NotControllerError,
    RequestTimedOutError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_BACKOFF_SECONDS = 30.0

# Refused or reset connections, a server starting up or shutting down, a connection that died under us;
# and asyncpg's protocol left in a state it cannot go on from, which a server shutting down in the middle
# of a query causes (seen in make test's fault scenario): a new connection is the answer, as for the others.
UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
               asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
# The database refusing one row's values: SQLSTATE class 22 (data exception) and 23 (integrity constraint),
# and values asyncpg cannot encode for it.
CONTENT_REFUSALS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                    asyncpg.exceptions._base.DataError, UnicodeEncodeError)

# The broker down, restarting, or between controllers: to wait out, unlike a missing topic or a refused login.
BROKER_UNREACHABLE = (KafkaConnectionError, NodeNotReadyError, RequestTimedOutError, KafkaTimeoutError,
                      LeaderNotAvailableError, NotControllerError, CoordinatorNotAvailableError, OSError,
                      asyncio.TimeoutError)


def is_unreachable(exc: BaseException) -> bool:
    """Whether the database cannot be reached now, as opposed to refusing what it was sent."""
    return isinstance(exc, UNREACHABLE) and not isinstance(exc, CONTENT_REFUSALS)


def is_broker_unreachable(exc: BaseException) -> bool:
    """Whether the broker cannot be reached now, as opposed to refusing what it was asked."""
    # faust raises a bare Exception when the cluster metadata names no controller, as while the broker restarts
    if type(exc) is Exception and str(exc).startswith("Controller node"):
        return True
    # A KRaft broker shutting down is fenced: creating a topic (faust's assignor topic at start) fails for
    # want of a broker, not for a wrong replication factor, and succeeds once it is back
    if isinstance(exc, InvalidReplicationFactorError) and "fenced" in str(exc):
        return True
    return isinstance(exc, BROKER_UNREACHABLE)


def is_infrastructure(exc: BaseException) -> bool:
    """Whether a failure is about the broker or the database being unavailable, not about a message."""
    return is_unreachable(exc) or is_broker_unreachable(exc) or isinstance(exc, KafkaError)


async def while_unreachable(what: str, attempt: Callable[[], Awaitable[T]],
                            on_wait: Callable[[float], None] | None = None, *,
                            away: Callable[[BaseException], bool] = is_unreachable,
                            most_seconds: float = MAX_BACKOFF_SECONDS) -> T:
    """Run attempt until it succeeds, backing off from 0.5 s to most_seconds while away(failure) holds.

    By default away is PostgreSQL being unreachable, with back-off up to 30 s.
    """
    delay = 0.5
    waited = 0.0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not away(exc):
                raise
            log.warning("cannot %s (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            if on_wait:
                on_wait(waited)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, most_seconds)
