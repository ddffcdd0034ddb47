"""healthbook replay: rebuild the book from the visits topic in one process, or in N over disjoint partitions."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys

from rich.console import Console

from commands import render
from commands.processes import settings_env
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from streams.replay import (
    ReplayReport,
    abandon_rebuild,
    begin_rebuild,
    rebuild,
    rebuilt_report,
    replay,
    swap_in,
)


class ReplayFailed(RuntimeError):
    """A process of a parallel rebuild failed; the rebuild was dropped and the live book is untouched."""


def replay_book(settings: Settings, args: argparse.Namespace) -> None:
    """Rebuild the health book from the visits topic and swap it in."""
    if args.partitions:
        only = [int(p) for p in args.partitions.split(",")]
        part = asyncio.run(rebuild(settings, kafka.Broker.of(settings), console=Console(quiet=True),
                                   partitions=only))
        print(f"rebuilt partitions {args.partitions}: {part.messages} messages")
        return
    console = render.console()
    report = asyncio.run(replay(settings, kafka.Broker.of(settings), console) if args.processes == 1 else
                         _replay_in_processes(settings, args.processes, console))
    print(f"replayed {report.messages} messages into {report.rows} health-book rows "
          f"({report.merged_from_live} newer rows kept from the live table) and swapped it in; the live book was "
          f"locked {report.locked_seconds * 1000:.0f} ms for the last merge and the swap")


async def _replay_in_processes(settings: Settings, processes: int, console: Console) -> ReplayReport:
    """One rebuild filled by N processes, each over every N-th partition, then merged and swapped in once."""
    partitions = sorted(await kafka.partitions_of(kafka.Broker.of(settings), settings.topics.visits))
    shares = [partitions[i::processes] for i in range(processes) if partitions[i::processes]]
    since = await begin_rebuild(settings)
    console.print(f"replaying {settings.topics.visits} in {len(shares)} processes over partitions "
                  f"{'; '.join(','.join(map(str, share)) for share in shares)} ...")
    children = [subprocess.Popen([sys.executable, "-m", "commands.cli", "replay", "--partitions",
                                  ",".join(map(str, share))], cwd=PROJECT_ROOT, env=settings_env(settings))
                for share in shares]
    codes = await asyncio.gather(*(asyncio.to_thread(child.wait) for child in children))
    if any(codes):
        await abandon_rebuild(settings)
        raise ReplayFailed(f"a replay process exited with {max(codes)}; the rebuild was dropped and the live book "
                           "is untouched: see its output above, fix the cause and replay again")
    return await swap_in(settings, since, await rebuilt_report(settings))
