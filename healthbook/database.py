"""PostgreSQL connections and the versioned SQL migrations every process applies at start-up."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DROP_ATTEMPTS = 120  # seconds to wait for an autovacuum worker to leave a database being recreated
_LOCK_ID = 0x4842_0001  # advisory lock so concurrent starters migrate once


class MigrationError(RuntimeError):
    """A migration file is misnamed or failed to apply."""


def migration_files() -> list[tuple[int, Path]]:
    """Migrations in order, from files named NNN_description.sql."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = re.fullmatch(r"(\d{3})_[a-z0-9_]+\.sql", path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_description.sql")
        found.append((int(match.group(1)), path))
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; return their numbers."""
    await conn.execute("select pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "create table if not exists schema_migrations ("
            " version int primary key, applied_at timestamptz not null default now())"
        )
        done = {row["version"] for row in await conn.fetch("select version from schema_migrations")}
        applied = []
        for version, path in migration_files():
            if version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute("insert into schema_migrations (version) values ($1)", version)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{path.name} failed: {exc}") from exc
            applied.append(version)
        return applied
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _LOCK_ID)


async def connect_pool(database_url: str, **kwargs: object) -> asyncpg.Pool:
    """Open a pool and bring the schema up to date."""
    pool = await asyncpg.create_pool(database_url, reset=_end_open_transaction, **kwargs)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool


async def _end_open_transaction(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: no transaction left open.

    healthbook keeps no session state (no LISTEN, SET or advisory lock outlives a call), so asyncpg's
    default reset (a round trip of RESET ALL and the like on every release) buys nothing; it was 7 % of
    the query consumer's samples.
    """
    if conn.is_in_transaction():
        await conn.execute("rollback")


def database_url_for(base_url: str, name: str) -> str:
    """The same server and credentials as base_url, another database."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path="/" + name))


async def recreate_database(base_url: str, name: str) -> str:
    """Drop and create an empty database on the server of base_url; return its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"database name {name!r} must be lower-case letters, digits and underscores")
    conn = await asyncpg.connect(base_url)
    try:
        for _ in range(DROP_ATTEMPTS):
            try:
                await conn.execute(f"drop database if exists {name} with (force)")
                break
            except asyncpg.InsufficientPrivilegeError:  # autovacuum (a superuser's process) is in it: wait it out
                await asyncio.sleep(1)
        else:
            raise DatabaseBusy(f"database {name} could not be dropped for {DROP_ATTEMPTS} s: a process this role "
                               "may not end (autovacuum, or another role's session) is connected to it")
        await conn.execute(f"create database {name}")
    finally:
        await conn.close()
    return database_url_for(base_url, name)


class DatabaseBusy(RuntimeError):
    """A database to recreate stayed in use by a process the healthbook role cannot end."""
