"""Reading the dead-letter topic, for operators and for checks that nothing was dropped."""

from __future__ import annotations

from typing import Any

from consumers.dlq import read_entries


async def read_dead_letters(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every dead-letter record currently on the topic, oldest first per partition."""
    return [entry.record for entry in await read_entries(bootstrap, topic)]
