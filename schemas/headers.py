"""Kafka headers healthbook sets: which dead-letter record a re-driven message came from."""

from __future__ import annotations

RETRY_HEADER = "healthbook-retry-of"


def retry_header(partition: int, offset: int) -> tuple[str, bytes]:
    """The header a re-driven message carries: which dead-letter record it came from."""
    return RETRY_HEADER, f"{partition}:{offset}".encode()


def retry_of(headers: object) -> tuple[int, int] | None:
    """The dead-letter record a message was re-driven from, read from its headers."""
    for name, value in headers or ():
        if name == RETRY_HEADER and value:
            partition, _, offset = bytes(value).decode().partition(":")
            return int(partition), int(offset)
    return None
