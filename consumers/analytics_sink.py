"""The reference analytics subscriber: lands its released visits in DuckDB, once each by visit_ref and version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import duckdb
from aiokafka import TopicPartition

from healthbook import kafka
from schemas import catalogue, wire
from schemas.errors import ContractError

COLUMNS = [field["name"] for field in catalogue.RELEASED_VISIT.parsed["fields"]]
_BOUNDS = {"int": 2**31, "long": 2**63}
# Avro varints decode to any Python int: each integer field's range as DuckDB stores it
_INTEGERS = {field["name"]: _BOUNDS[t] for field in catalogue.RELEASED_VISIT.parsed["fields"]
             for t in (field["type"] if isinstance(field["type"], list) else [field["type"]])
             if isinstance(t, str) and t in _BOUNDS}
_TABLE = """
create table if not exists visits (
    visit_ref text primary key, version bigint not null, generalised integer not null, pseudonym text,
    pseudonym_period text, age_band text, sex integer, province_code text, facility_province text,
    facility_code text, admitted_month text not null, visit_type integer, treatment_days integer,
    main_diagnosis_code text, diagnosis_chapter text, secondary_diagnosis_codes text[], treatment_result integer,
    drug_codes text[], total_cost_vnd bigint, insurance_paid_vnd bigint
);
create table if not exists landed_offsets (topic text, partition_no integer, next_offset bigint,
                                           primary key (topic, partition_no));
create table if not exists unreadable (topic text, partition_no integer, record_offset bigint, reason text,
                                       primary key (topic, partition_no, record_offset));
"""
_CHUNK = 200  # rows per INSERT: DuckDB runs executemany row by row, a multi-row VALUES at once
# A batch lands through a staging table: its newest version per visit_ref, then an upsert that keeps the higher one.
_UPSERT = (f"insert into visits select {', '.join(COLUMNS)} from incoming "
           f"qualify row_number() over (partition by visit_ref order by version desc) = 1 "
           f"on conflict (visit_ref) do update set "
           + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "visit_ref")
           + " where excluded.version > visits.version")


def row_of(value: bytes) -> list[Any] | str:
    """A released record as a row of the visits table, or why it cannot be one."""
    try:
        record = wire.decode(value, catalogue.RELEASED_VISIT)
    except ContractError as exc:
        return str(exc)[:500]
    wide = [name for name, bound in _INTEGERS.items()
            if record[name] is not None and not -bound <= record[name] < bound]
    if wide:
        return f"{', '.join(wide)} out of range"
    return [record[c] for c in COLUMNS]


class DuckDBSink:
    """A DuckDB file holding the newest version of each released visit and how far the topic was landed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = duckdb.connect(str(path))
        self.connection.execute(_TABLE)
        self.connection.execute("create temporary table if not exists incoming as select * from visits limit 0")

    def next_offset(self, topic: str, partition: int) -> int | None:
        """Where landing resumes on a partition (None: from its beginning)."""
        row = self.connection.execute("select next_offset from landed_offsets where topic = ? and partition_no = ?",
                                      [topic, partition]).fetchone()
        return row[0] if row else None

    def land(self, topic: str, partition: int, messages: list[Any]) -> int:
        """Land a batch and its offset in one transaction; an unreadable record is kept aside, with why."""
        rows, unreadable = [], []
        for message in messages:
            row = row_of(message.value or b"")
            if isinstance(row, str):
                unreadable.append((topic, partition, message.offset, row))
            else:
                rows.append(row)
        self.connection.execute("begin transaction")
        try:
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start:start + _CHUNK]
                values = ", ".join(["(" + ", ".join("?" * len(COLUMNS)) + ")"] * len(chunk))
                self.connection.execute(f"insert into incoming ({', '.join(COLUMNS)}) values {values}",
                                        [value for row in chunk for value in row])
            if rows:
                self.connection.execute(_UPSERT)
                self.connection.execute("delete from incoming")
            if unreadable:
                self.connection.executemany("insert or ignore into unreadable values (?, ?, ?, ?)", unreadable)
            self.connection.execute("insert or replace into landed_offsets values (?, ?, ?)",
                                    [topic, partition, messages[-1].offset + 1])
            self.connection.execute("commit")
        except BaseException:
            self.connection.execute("rollback")
            raise
        return len(rows)

    def export_parquet(self, directory: Path) -> Path:
        """Write the landed visits as one Parquet file; returns its path."""
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / "visits.parquet"
        self.connection.execute(f"copy visits to '{out}' (format parquet)")
        return out

    def visits_by_month(self, chapter: str) -> list[tuple[str, int]]:
        """Visits per admission month for one ICD-10 chapter (its range, J00-J99)."""
        return self.connection.execute(
            "select admitted_month, count(*) from visits where diagnosis_chapter = ? group by 1 order by 1",
            [chapter]).fetchall()

    def close(self) -> None:
        """Close the file."""
        self.connection.close()


async def land_topic(broker: kafka.Broker, topic: str, sink: DuckDBSink, *, follow: bool = False,
                     stop: asyncio.Event | None = None) -> int:
    """Land a subscriber's topic into the sink from where it stopped; until its end, or until stop if following."""
    consumer = kafka.consumer(broker, "analytics-sink")
    await consumer.start()
    landed = 0
    try:
        partitions = [TopicPartition(topic, 0)]  # a subscriber's topic has one partition: its release order
        consumer.assign(partitions)
        for tp in partitions:
            resume = sink.next_offset(topic, tp.partition)
            if resume is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, resume)
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, messages in batch.items():
                landed += sink.land(topic, tp.partition, messages)
            if not batch and not follow:
                ends = await consumer.end_offsets(partitions)
                if all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                    break
    finally:
        await consumer.stop()
    return landed
