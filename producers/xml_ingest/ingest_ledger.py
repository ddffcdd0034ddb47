"""The clinic-side ledger of what ingest published, so a re-run can say what is already in the pipeline."""

from __future__ import annotations

import sqlite3
from enum import StrEnum
from pathlib import Path


class Seen(StrEnum):
    """How a visit version compares with what this machine already published."""

    NEW = "new"
    SAME = "same"
    CHANGED = "changed"


class IngestLedger:
    """(facility, MA_LK, version) -> content digest of every visit published from this machine."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "create table if not exists published (facility_code text, visit_code text, version integer, "
            "digest text not null, published_at text not null default current_timestamp, "
            "primary key (facility_code, visit_code, version))"
        )

    def seen(self, facility_code: str, visit_code: str, version: int, digest: str) -> Seen:
        """Whether this exact visit version was published before, with the same content or another."""
        row = self._db.execute(
            "select digest from published where facility_code = ? and visit_code = ? and version = ?",
            (facility_code, visit_code, version),
        ).fetchone()
        if row is None:
            return Seen.NEW
        return Seen.SAME if row[0] == digest else Seen.CHANGED

    def record(self, entries: list[tuple[str, str, int, str]]) -> None:
        """Remember published visits (after the broker acknowledged them)."""
        with self._db:
            self._db.executemany(
                "insert or replace into published (facility_code, visit_code, version, digest) values (?, ?, ?, ?)",
                entries,
            )

    def close(self) -> None:
        """Close the ledger file."""
        self._db.close()
