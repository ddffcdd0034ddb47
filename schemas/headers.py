"""Kafka headers healthbook sets: which dead-letter record a re-driven message came from, a release's sequence."""

from __future__ import annotations

RETRY_HEADER = "healthbook-retry-of"
RELEASE_SEQ_HEADER = "release-seq"  # on an analytics subscriber's topic: the record's place in release order


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


def release_seq(headers: object) -> int:
    """The release sequence a subscriber's record was sent under (0 if it carries none)."""
    for name, value in headers or ():
        if name == RELEASE_SEQ_HEADER and value:
            text = bytes(value).decode("ascii", "replace")
            return int(text) if text.isdigit() else 0
    return 0
