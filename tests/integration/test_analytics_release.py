"""The analytics release on a real broker and database: k-anonymous cells, no shared pseudonym, none lost or doubled."""

import os
import random
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import duckdb
import pytest

from consumers.analytics_sink import DuckDBSink, land_topic
from consumers.release_check import check
from consumers.released_visits import read_released
from domain.analytics_policy import load_policies
from domain.generalise import diagnosis_chapter
from healthbook import kafka
from healthbook.analytics_store import ReleaseStore
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from schemas import catalogue, wire
from streams.analytics_release import release_now, released_topic
from synthetic.analytics_population import analytics_population, deidentified_visit

pytestmark = pytest.mark.integration

MONTHS = ["202501", "202502", "202503", "202504", "202505", "202506"]
COHORT = '''name = "cohort-check"
k = 5
receives = ["pseudonym", "age_band", "sex", "province", "facility_province", "facility_code", "main_diagnosis"]
'''


@pytest.fixture
async def deployment(settings: Settings, tmp_path: Path):
    """A deployment of its own: prefix, database, the shipped policies and one more with pseudonyms and facilities."""
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "ops" / "analytics", policies)
    (policies / "cohort-check.toml").write_text(COHORT)
    own = settings.model_copy(update={
        "topic_prefix": f"test-release-{uuid.uuid4().hex[:8]}.", "analytics_policy_dir": policies,
        "analytics_release_key_file": tmp_path / "release.key",
        "database_url": await recreate_database(settings.database_url, "healthbook_test_release")})
    await kafka.ensure_topics(own, kafka.Broker.of(own))
    pool = await connect_pool(own.database_url, min_size=1, max_size=4)
    yield own, pool
    pool.terminate()  # a failed run may leave a stage's connection out; the database is dropped next run anyway


async def _run_stage(own: Settings, now: datetime) -> None:
    """Run a release stage whose clock says now until it has read everything and closed what is due."""
    await release_now(own, b"r" * 32, clock=lambda: now)


async def _streams(own: Settings) -> dict:
    broker = kafka.Broker.of(own)
    return {p.name: await read_released(broker, released_topic(own.topic_prefix, p.name))
            for p in load_policies(own.analytics_policy_dir)}


async def test_released_cells_hold_k_people_and_no_pseudonym_links_subscribers(deployment, tmp_path: Path):
    own, pool = deployment
    broker = kafka.Broker.of(own)
    population = analytics_population(2511, MONTHS)
    await kafka.send_all(broker, "test", own.topics.deidentified, population.framed())

    # Mid-May 2025: January to April have closed (grace 10 days), May and June still gather.
    await _run_stage(own, datetime(2025, 5, 20, tzinfo=UTC))
    streams = await _streams(own)
    for name, released in streams.items():
        months = {r.record["admitted_month"] for r in released if r.record["generalised"]}
        assert months <= {"202501", "202502", "202503", "202504"}, f"{name}: an open window widened nothing yet"
        assert any(r.record["admitted_month"] == "202505" for r in released), f"{name}: crowds go out at once"
    waiting = await pool.fetchval("select count(*) from analytics_held where state = 'waiting'")
    assert waiting > 0, "small cells of open windows wait"

    # A stop after the broker took the last ten records of a subscriber but before the stage wrote that down.
    last = streams["cohort-check"][-10:]
    async with pool.acquire() as conn:
        await conn.execute("update analytics_sequences set published_seq = $1 where subscriber = 'cohort-check'",
                           last[0].seq - 1)
        await conn.executemany("insert into analytics_outbox values ('cohort-check', $1, $2, $3)",
                               [(r.seq, r.record["visit_ref"].encode(), wire.encode(catalogue.RELEASED_VISIT,
                                                                                    r.record)) for r in last])

    # Late visits for a closed month: one to a crowd already out, one of a person alone; new versions of two.
    rng = random.Random(7)
    crowd = next(v for v in population.visits
                 if v["admitted_month"] == "202502" and v["main_diagnosis_code"] == "J06.9")
    late = [deidentified_visit(rng, crowd["pseudonym"], "79001", 2019, crowd["sex"], "202502", "J06.9"),
            deidentified_visit(rng, "f" * 64, "01001", 1950, 1, "202502", "E11")]
    corrected = [{**v, "version": 2, "treatment_days": 4} for v in population.visits[:2]]
    await kafka.send_all(broker, "test", own.topics.deidentified, _framed(late + corrected))

    # January 2026: every window has closed.
    await _run_stage(own, datetime(2026, 1, 5, tzinfo=UTC))
    streams = await _streams(own)
    report = check(load_policies(own.analytics_policy_dir), streams, await ReleaseStore(pool).tallies())
    assert report.problems == [], report.problems
    every_visit = {v["visit_ref"] for v in population.visits + late}
    for found in report.subscribers:
        assert found.cells_under_k == 0 and found.doubled == 0
        assert found.smallest_cell_records >= found.k
        assert 0 < found.suppressed_share < 1, f"{found.subscriber}: people alone are suppressed, crowds are not"
        rows = await pool.fetch("select state, count(*) from analytics_held where subscriber = $1 group by 1",
                                found.subscriber)
        states = {row["state"]: row["count"] for row in rows}
        assert sum(states.values()) == len(every_visit) and "waiting" not in states, "every visit decided, none lost"
        on_topic = {r.record["visit_ref"] for r in streams[found.subscriber]}
        assert len(on_topic) == states["released"], "each released visit is on the topic"
    assert all(n == 0 for n in report.shared_pseudonyms.values()) and len(report.shared_pseudonyms) == 3
    assert all(n == 0 for n in report.shared_visit_refs.values())
    alone = [r for r in streams["cohort-check"] if r.record["main_diagnosis_code"] in ("E11", "K29.7")]
    assert alone and all(r.record["generalised"] for r in alone), "a person alone goes out widened among k, or not"
    for name in ("health-statistics", "cohort-check"):  # 40-44 and 45-49 hold 3 people each, 40-59 holds 6
        adults = [r for r in streams[name] if r.record["main_diagnosis_code"] == "I10"]
        assert adults and all(r.record["age_band"] == "40-59" for r in adults), name
    assert {r.record["age_band"] for r in streams["university-research"] if r.record["main_diagnosis_code"] == "I10"
            } == {"40-49"}, "ten-year bands hold the same six people as they are"

    await _the_counts_hide_small_cells(pool, population.visits + late)
    _the_checker_command_prints_the_same(own)
    await _the_sink_lands_each_visit_once(own, streams["university-research"], tmp_path)


def _framed(visits):
    return [(v["pseudonym"].encode(), wire.encode(catalogue.DEIDENTIFIED_VISIT, v)) for v in visits]


async def _the_counts_hide_small_cells(pool: asyncpg.Pool, visits) -> None:
    people: dict[tuple, set[str]] = defaultdict(set)
    for v in visits:
        band = f"{(int(v['admitted_month'][:4]) - v['birth_year']) // 5 * 5}"
        people[(v["admitted_month"], v["province_code"], band, v["sex"], v["main_diagnosis_code"])].add(v["pseudonym"])
    rows = await pool.fetch("select * from analytics_visit_counts where grain = 'code'")
    assert rows, "the aggregate feed has counts"
    for row in rows:
        key = (row["admitted_month"], row["province_code"], row["age_band"].split("-")[0].rstrip("+"), row["sex"],
               row["diagnosis"])
        assert len(people[key]) >= 5, f"a count of fewer than 5 people is shown: {dict(row)}"
    chapters = await pool.fetch("select * from analytics_visit_counts where grain = 'chapter'")
    assert {r["diagnosis"] for r in chapters} <= {diagnosis_chapter(c) for c in ("J06.9", "I10", "E11", "K29.7")}


def _the_checker_command_prints_the_same(own: Settings) -> None:
    env = {**os.environ, "HEALTHBOOK_TOPIC_PREFIX": own.topic_prefix, "HEALTHBOOK_DATABASE_URL": own.database_url,
           "HEALTHBOOK_ANALYTICS_POLICY_DIR": str(own.analytics_policy_dir), "HEALTHBOOK_KAFKA_USER": "admin"}
    done = subprocess.run([sys.executable, "-m", "commands.cli", "analytics", "check"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert "release holds" in done.stdout and "suppressed share" in done.stdout
    print(done.stdout)


async def _the_sink_lands_each_visit_once(own: Settings, released, tmp_path: Path) -> None:
    topic = released_topic(own.topic_prefix, "university-research")
    sink = DuckDBSink(tmp_path / "research.duckdb")
    try:
        assert await land_topic(kafka.Broker.of(own), topic, sink) == len(released)
        assert await land_topic(kafka.Broker.of(own), topic, sink) == 0, "landing again lands nothing twice"
        newest = {}
        for r in released:
            ref = r.record["visit_ref"]
            newest[ref] = max(newest.get(ref, 0), r.record["version"])
        landed = dict(sink.connection.execute("select visit_ref, version from visits").fetchall())
        assert landed == newest, "one row per visit_ref, at its highest version"
        parquet = sink.export_parquet(tmp_path / "parquet")
        by_month = sink.visits_by_month("J00-J99")
    finally:
        sink.close()
    assert duckdb.connect().execute(f"select count(*) from '{parquet}'").fetchall() == [(len(newest),)]
    assert [m for m, _ in by_month] == MONTHS
