"""Ending the worker at once when it cannot go on, so nothing half-done is committed."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from schemas.errors import without_content

log = logging.getLogger(__name__)
EXIT_CANNOT_GO_ON = 70


def stop_worker(why: str) -> NoReturn:
    """Log why (with the exception being handled) and end the process with exit code 70.

    faust restarts a crashed agent in place, past the batch it failed on; stopping the process
    instead makes the supervisor restart it, and the restarted worker resumes from the applied offsets.
    """
    log.critical("%s: %s", why, without_content(sys.exc_info()[1]))
    logging.shutdown()
    os._exit(EXIT_CANNOT_GO_ON)


def leave_mid_batch() -> NoReturn:
    """End the process at once (exit 0) when asked to stop while a batch is being written.

    A batch's events are acknowledged only once it is written, so nothing of this batch is; leaving
    at once, rather than letting faust's shutdown cancel the write half way through, leaves one
    simple state: whoever takes the partition reads the batch again from the last commit.
    """
    log.warning("asked to stop in the middle of a batch; leaving without acknowledging it")
    logging.shutdown()
    os._exit(0)
