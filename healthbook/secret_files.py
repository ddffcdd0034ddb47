"""Secrets on disk: written owner-only from the first byte, never through a moment readable by others."""

from __future__ import annotations

import os
from pathlib import Path


def write_owner_only(path: Path, data: bytes) -> None:
    """Write a secret to path, created 0600 (and made 0600 if it existed) before any byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT keeps an existing file's mode
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(data)
    finally:
        if fd >= 0:
            os.close(fd)
