"""The analytics release stage's SQL: held visits, open cells, the outbox, windows, offsets and the aggregate feed."""

from __future__ import annotations

from typing import Any

import asyncpg

LOCK_ID = 0x48424B41  # one release stage per database: pg_advisory_lock on this number
_HELD = "select visit_ref, person, fine_cell, coarse_cell, state, released_as from analytics_held"


class ReleaseStore:
    """Where the release stage keeps what it holds and what it released; each method runs on the connection given."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @staticmethod
    async def lock(conn: asyncpg.Connection) -> bool:
        """Take this database's release-stage lock on conn, if no other stage holds it."""
        return bool(await conn.fetchval("select pg_try_advisory_lock($1)", LOCK_ID))

    @staticmethod
    async def unlock(conn: asyncpg.Connection) -> None:
        """Give the lock back."""
        await conn.execute("select pg_advisory_unlock($1)", LOCK_ID)

    async def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition of the source topic."""
        return {row["partition"]: row["next_offset"] for row in await self.pool.fetch(
            "select partition, next_offset from analytics_offsets where topic = $1", topic)}

    @staticmethod
    async def save_offsets(conn: asyncpg.Connection, topic: str, offsets: dict[int, int]) -> None:
        """Record how far the source topic was read, in the batch's transaction."""
        await conn.executemany(
            "insert into analytics_offsets values ($1, $2, $3) on conflict (topic, partition) "
            "do update set next_offset = excluded.next_offset", [(topic, p, o) for p, o in offsets.items()])

    async def recover_published(self, subscriber: str, on_topic: int) -> None:
        """Everything up to on_topic (the last release-seq on the topic) is published: forget it from the outbox."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("insert into analytics_sequences values ($1, 1, 0) on conflict do nothing", subscriber)
            await conn.execute("update analytics_sequences set published_seq = greatest(published_seq, $2) "
                               "where subscriber = $1", subscriber, on_topic)
            await conn.execute("delete from analytics_outbox where subscriber = $1 and seq <= "
                               "(select published_seq from analytics_sequences where subscriber = $1)", subscriber)

    @staticmethod
    async def set_aside(conn: asyncpg.Connection, message: Any, reason: str) -> None:
        """Keep a record the stage could not use, with why."""
        await conn.execute("insert into analytics_unreadable values ($1, $2, $3, $4, $5) on conflict do nothing",
                           message.topic, message.partition, message.offset, reason, message.value)

    @staticmethod
    async def keep_for_counts(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> list[str]:
        """Keep the newest version of each visit for the aggregate feed; returns the closed months it touched."""
        await conn.executemany(
            "insert into analytics_visits values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (visit_ref) do update "
            "set version = excluded.version, person = excluded.person, admitted_month = excluded.admitted_month, "
            "province_code = excluded.province_code, age_band = excluded.age_band, sex = excluded.sex, "
            "main_diagnosis_code = excluded.main_diagnosis_code where analytics_visits.version < excluded.version",
            rows)
        return [row["admitted_month"] for row in await conn.fetch(
            "select distinct admitted_month from analytics_windows where closed_at is not null "
            "and admitted_month = any($1::text[])", list({row[3] for row in rows}))]

    @staticmethod
    async def hold(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> list[asyncpg.Record]:
        """Hold visits for a subscriber (a newer version replaces an older one, waiting again); returns those taken."""
        return await conn.fetch(
            """insert into analytics_held (subscriber, visit_ref, release_key, version, admitted_month, person,
                                           fine_cell, coarse_cell, fine_value, coarse_value, state, released_as)
               select *, 'waiting', null::smallint from unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                   $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bytea[])
               on conflict (subscriber, visit_ref) do update set
                   release_key = excluded.release_key, version = excluded.version,
                   admitted_month = excluded.admitted_month, person = excluded.person,
                   fine_cell = excluded.fine_cell, coarse_cell = excluded.coarse_cell,
                   fine_value = excluded.fine_value, coarse_value = excluded.coarse_value,
                   state = 'waiting', released_as = null
               where analytics_held.version < excluded.version
               returning visit_ref, admitted_month, fine_cell, coarse_cell""",
            *[list(column) for column in zip(*rows, strict=True)])

    @staticmethod
    async def open_windows(conn: asyncpg.Connection, subscriber: str, months: list[str]) -> None:
        """Make sure each month has its window's tally (open until closed)."""
        await conn.executemany("insert into analytics_windows (subscriber, admitted_month) values ($1, $2) "
                               "on conflict do nothing", [(subscriber, m) for m in months])

    @staticmethod
    async def open_cells(conn: asyncpg.Connection, subscriber: str, level: int, cells: list[str]) -> set[str]:
        """Which of these cells already went out with k people."""
        return {row["cell"] for row in await conn.fetch(
            "select cell from analytics_open_cells where subscriber = $1 and level = $2 and cell = any($3::text[])",
            subscriber, level, cells)}

    @staticmethod
    async def waiting_in(conn: asyncpg.Connection, subscriber: str, level: int, cells: list[str]) -> list[Any]:
        """The waiting visits of these cells (as the policy gives them at level 0, widened at 1)."""
        column = "fine_cell" if level == 0 else "coarse_cell"
        return await conn.fetch(f"{_HELD} where subscriber = $1 and {column} = any($2::text[]) and state = 'waiting'",
                                subscriber, cells)

    @staticmethod
    async def waiting_in_month(conn: asyncpg.Connection, subscriber: str, month: str) -> list[Any]:
        """The visits of a month still waiting when its window closes."""
        return await conn.fetch(f"{_HELD} where subscriber = $1 and admitted_month = $2 and state = 'waiting'",
                                subscriber, month)

    @staticmethod
    async def closed_months(conn: asyncpg.Connection, subscriber: str, months: list[str]) -> set[str]:
        """Which of these months' windows have closed for a subscriber."""
        return {row["admitted_month"] for row in await conn.fetch(
            "select admitted_month from analytics_windows where subscriber = $1 and closed_at is not null "
            "and admitted_month = any($2::text[])", subscriber, months)}

    @staticmethod
    async def release(conn: asyncpg.Connection, subscriber: str, refs: list[str], level: int) -> list[str]:
        """Release waiting visits at a level into the outbox, in order, and open their cells; returns their months."""
        value, cell = ("fine_value", "fine_cell") if level == 0 else ("coarse_value", "coarse_cell")
        picked = await conn.fetch(
            f"""update analytics_held set state = 'released', released_as = $3
                where subscriber = $1 and visit_ref = any($2::text[]) and state = 'waiting'
                returning admitted_month, release_key, {value} as value, {cell} as cell""",
            subscriber, refs, level)
        await conn.execute("insert into analytics_open_cells select $1, $2, unnest($3::text[]) on conflict do nothing",
                           subscriber, level, list({row["cell"] for row in picked}))
        first = await conn.fetchval("update analytics_sequences set next_seq = next_seq + $2 where subscriber = $1 "
                                    "returning next_seq - $2", subscriber, len(picked))
        await conn.executemany("insert into analytics_outbox values ($1, $2, $3, $4)",
                               [(subscriber, first + i, row["release_key"].encode(), row["value"])
                                for i, row in enumerate(picked)])
        return [row["admitted_month"] for row in picked]

    @staticmethod
    async def suppress(conn: asyncpg.Connection, subscriber: str, refs: list[str]) -> list[str]:
        """Suppress waiting visits; returns their months."""
        return [row["admitted_month"] for row in await conn.fetch(
            "update analytics_held set state = 'suppressed' where subscriber = $1 and visit_ref = any($2::text[]) "
            "and state = 'waiting' returning admitted_month", subscriber, refs)]

    @staticmethod
    async def tally(conn: asyncpg.Connection, subscriber: str, column: str, per_month: dict[str, int]) -> None:
        """Add to a window's count of released, generalised or suppressed visits."""
        assert column in ("released", "generalised", "suppressed")
        await conn.executemany(
            f"insert into analytics_windows (subscriber, admitted_month, {column}) values ($1, $2, $3) "
            f"on conflict (subscriber, admitted_month) do update set {column} = analytics_windows.{column} + $3",
            [(subscriber, month, n) for month, n in per_month.items()])

    @staticmethod
    async def unclosed_windows(conn: asyncpg.Connection, subscriber: str) -> list[str]:
        """The months whose window has not closed for a subscriber, oldest first."""
        return [row["admitted_month"] for row in await conn.fetch(
            "select admitted_month from analytics_windows where subscriber = $1 and closed_at is null "
            "order by admitted_month", subscriber)]

    @staticmethod
    async def close_window(conn: asyncpg.Connection, subscriber: str, month: str, at: Any) -> None:
        """Mark a window closed."""
        await conn.execute("update analytics_windows set closed_at = $3 where subscriber = $1 and admitted_month = $2",
                           subscriber, month, at)

    @staticmethod
    async def visits_of_month(conn: asyncpg.Connection, month: str) -> list[Any]:
        """What the aggregate feed counts for a month: each visit's newest version."""
        return await conn.fetch("select province_code, age_band, sex, main_diagnosis_code, person "
                                "from analytics_visits where admitted_month = $1", month)

    @staticmethod
    async def replace_counts(conn: asyncpg.Connection, month: str, rows: list[tuple[Any, ...]]) -> None:
        """Put a month's counts in place of what the feed held for it."""
        await conn.execute("delete from analytics_visit_counts where admitted_month = $1", month)
        await conn.executemany("insert into analytics_visit_counts values ($1, $2, $3, $4, $5, $6, $7)", rows)

    async def outbox(self, subscriber: str, limit: int) -> list[Any]:
        """The next released records not yet on the subscriber's topic, in release order."""
        return await self.pool.fetch(
            "select seq, key, value from analytics_outbox where subscriber = $1 and seq > "
            "(select published_seq from analytics_sequences where subscriber = $1) order by seq limit $2",
            subscriber, limit)

    async def published(self, subscriber: str, last: int) -> None:
        """Everything up to last is on the subscriber's topic."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("update analytics_sequences set published_seq = $2 where subscriber = $1",
                               subscriber, last)
            await conn.execute("delete from analytics_outbox where subscriber = $1 and seq <= $2", subscriber, last)

    async def tallies(self) -> dict[str, tuple[int, int, int]]:
        """Per subscriber: visits released as the policy gives them, released widened, and suppressed."""
        return {row["subscriber"]: (row["released"], row["generalised"], row["suppressed"])
                for row in await self.pool.fetch(
                    "select subscriber, sum(released)::int as released, sum(generalised)::int as generalised, "
                    "sum(suppressed)::int as suppressed from analytics_windows group by subscriber")}
