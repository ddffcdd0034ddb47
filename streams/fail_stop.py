"""Ending the worker at once when it cannot go on, so nothing half-done is committed."""

from __future__ import annotations

import logging
import os
from typing import NoReturn

log = logging.getLogger(__name__)
EXIT_CANNOT_GO_ON = 70


def stop_worker(why: str) -> NoReturn:
    """Log why (with the exception being handled) and end the process with exit code 70.

    faust acknowledges a failed take_events batch when its generator closes and restarts a crashed
    agent in place; stopping the process instead makes the supervisor restart it, and the restarted
    worker resumes from the applied offsets.
    """
    log.critical(why, exc_info=True)
    logging.shutdown()
    os._exit(EXIT_CANNOT_GO_ON)
