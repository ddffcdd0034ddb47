"""make bench (ingest part): generate a GIAMDINHHS file of N MB and ingest it, checking only and publishing.

Prints HOSO/s, MB/s and the ingest process's peak RSS for each run. Usage:
    python benchmarks/ingest.py [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from commands.local_ca import local_ca
from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.kafka import Broker, ensure_topics
from producers.clinic_keys import save_signer
from schemas.envelope import Signer
from schemas.visit import VisitEvent
from synthetic.dossiers import Quirks, hoso_xml
from synthetic.population import make_citizen, make_visit

# The harness sets up its own stack, topics and ACLs: it logs in to the broker as the admin principal.
os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")

BENCH_DIR = PROJECT_ROOT / ".local" / "bench"


def generate(path: Path, megabytes: int) -> int:
    """Write a dossier of about `megabytes` MB of mixed-quirk HOSO; return the HOSO count."""
    rng = random.Random(11)
    people = [make_citizen(rng) for _ in range(5_000)]
    quirks = [Quirks(), Quirks(bom=True), Quirks(encoding="nested"), Quirks(shuffle_tables=True)]
    target = megabytes * 1024 * 1024
    count = 0
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<GIAMDINHHS><THONGTINDONVI><MACSKCB>79001</MACSKCB>'
                  "</THONGTINDONVI><THONGTINHOSO><NGAYLAP>20260401</NGAYLAP><SOLUONGHOSO>0</SOLUONGHOSO>"
                  "<DANHSACHHOSO>\n")
        while out.tell() < target:
            count += 1
            admitted = datetime(2026, rng.randint(1, 3), rng.randint(1, 28), rng.randint(7, 16), 0)
            event = VisitEvent.model_validate(make_visit(rng, rng.choice(people), "79001", count, admitted))
            out.write(hoso_xml(event.model_dump(), quirks[count % len(quirks)], rng))
        out.write("</DANHSACHHOSO></THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>\n")
    return count


def timed_ingest(settings: Settings, path: Path, *extra: str) -> tuple[float, float, str]:
    """Run 'healthbook ingest' in a child; return seconds, the child's peak RSS in MiB, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "commands.cli", "ingest", str(path), *extra], cwd=PROJECT_ROOT,
                          env=settings_env(settings), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise RuntimeError(f"ingest failed:\n{done.stdout}\n{done.stderr}")
    return seconds, max(peak, before) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    console = Console()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"dossier-{args.mb}mb.xml"
    started = time.perf_counter()
    hoso = generate(path, args.mb)
    console.print(f"generated {path} ({path.stat().st_size / 2**20:.0f} MiB, {hoso} HOSO) "
                  f"in {time.perf_counter() - started:.0f} s")

    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    settings = Settings().model_copy(update={
        "topic_prefix": f"bench-ingest-{stamp}.", "key_dir": BENCH_DIR / f"keys-{stamp}",
        "ingest_ledger": BENCH_DIR / f"ledger-{stamp}.sqlite"})
    signer = Signer.generate("k1")
    save_signer(settings.key_dir, "79001", signer)
    asyncio.run(ensure_topics(settings, Broker.of(settings)))
    ca = local_ca(settings)
    asyncio.run(ca.register(settings, [ca.entry("79001", signer)]))

    size_mb = path.stat().st_size / 2**20
    table = Table(title=f"healthbook ingest benchmark ({size_mb:.0f} MiB, {hoso} HOSO)", title_justify="left")
    for column in ("run", "seconds", "HOSO/s", "MiB/s", "peak RSS (MiB)"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for label, extra in (("check only (parse, map, validate)", ("--check",)),
                         ("publish (+ sign, send, acks=all)", ())):
        seconds, rss, _ = timed_ingest(settings, path, *extra)
        table.add_row(label, f"{seconds:.1f}", f"{hoso / seconds:,.0f}", f"{size_mb / seconds:.1f}", f"{rss:.0f}")
    console.print(table)
    path.unlink()


if __name__ == "__main__":
    main()
