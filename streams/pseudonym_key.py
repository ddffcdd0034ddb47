"""The worker's secret for analytics pseudonyms: created owner-only on first start, kept so pseudonyms stay stable."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
KEY_BYTES = 32


class PseudonymKeyError(ValueError):
    """The pseudonym key file is unusable."""


def load_or_create_key(path: Path) -> bytes:
    """The secret key for pseudonyms; created (owner-only) the first time, so pseudonyms stay stable after."""
    if path.exists():
        key = path.read_bytes()
        if len(key) < KEY_BYTES:
            raise PseudonymKeyError(f"{path} holds {len(key)} bytes; a pseudonym key needs at least {KEY_BYTES}")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(os.urandom(KEY_BYTES))
    log.warning("created a new pseudonym key at %s; keep it: pseudonyms change with it", path)
    return path.read_bytes()
