"""Operator tools on the real stack: dead-letter re-drive, replay with swap, status, metrics and health."""

import asyncio
import json
import subprocess
import sys
import urllib.request

import pytest

from commands.identity_standin import confirmation
from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT
from producers.clinic_keys import new_key_entry, publish_keys
from schemas.envelope import Signer, seal_visit
from tests.factories import visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until

pytestmark = pytest.mark.integration


def healthbook(settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=PROJECT_ROOT,
                          env=settings_env(settings), capture_output=True, text=True, timeout=timeout)


async def test_a_late_registered_clinic_is_re_driven_and_a_forgery_returns_only_once(clinics, db, settings):
    person = new_citizen()
    late = Signer.generate("k1")
    event = visit(person=person, facility="56010", sequence=next_sequence())
    forged = visit(person=person, sequence=next_sequence())
    async with clinics.publisher() as pub:
        key = person.personal_id.encode()
        await (await pub.publish_raw(key, seal_visit(event, "56010", late)))
        await (await pub.publish_raw(key, seal_visit(forged, "79001", Signer("k1", Signer.generate("x").private_key))))
    await clinics.barrier(person)
    await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [new_key_entry("56010", late)])

    listed = healthbook(settings, "dlq", "list", "--clinic", "56010")
    assert "unknown_clinic" in listed.stdout
    first = healthbook(settings, "dlq", "retry", "--clinic", "56010", "--reason", "unknown_clinic")
    assert first.returncode == 0 and first.stdout.startswith("re-driven 1;"), first.stdout + first.stderr
    await wait_until(lambda: visible(db, "56010", event["visit_code"]), "the re-driven visit", process=clinics.worker)

    assert healthbook(settings, "dlq", "retry", "--reason", "bad_signature", "--clinic", "79001").returncode == 0
    await clinics.barrier(person)
    letters = [d for d in await clinics.dead_letters() if d["event_id"] == forged["event_id"]]
    assert len(letters) == 2 and letters[1]["retry_of"] is not None
    again = healthbook(settings, "dlq", "retry", "--reason", "bad_signature", "--clinic", "79001")
    assert "re-driven 0;" in again.stdout and "failed again" in again.stdout
    await clinics.barrier(person)
    assert len([d for d in await clinics.dead_letters() if d["event_id"] == forged["event_id"]]) == 2
    shown = healthbook(settings, "dlq", "show", "--reason", "unknown_clinic", "--clinic", "56010")
    assert json.loads(shown.stdout.split("\n}\n")[0] + "\n}")["reason_code"] == "unknown_clinic"


async def test_replay_rebuilds_and_swaps_while_the_citizen_query_keeps_answering(clinics, db, settings, identity):
    person = new_citizen()
    events = [visit(person=person, sequence=next_sequence()) for _ in range(3)]
    await clinics.publish(*events)
    await clinics.barrier(person)
    book = "select facility_code, visit_code, version, event_id, record from health_book_visits order by 1, 2"
    before = [tuple(r) for r in await db.fetch(book)]

    replay = asyncio.create_task(asyncio.to_thread(healthbook, settings, "replay"))
    answers = []
    while not replay.done():
        answers.append(await identity.ask(confirmation(person.personal_id, 2026)))
    result = await replay
    assert result.returncode == 0, result.stdout + result.stderr
    assert "swapped it in" in result.stdout
    assert answers and all(len(a.visits) == 3 for a in answers)
    after = [tuple(r) for r in await db.fetch(book)]
    assert after == before
    assert len((await identity.ask(confirmation(person.personal_id, 2026))).visits) == 3


async def test_status_metrics_and_health(clinics, settings, identity):
    person = new_citizen()
    await clinics.barrier(person)
    shown = healthbook(settings, "status")
    assert shown.returncode == 0, shown.stderr
    assert "lag per partition" in shown.stdout and "consumed" in shown.stdout
    base = f"http://127.0.0.1:{settings.worker_metrics_port}"
    health = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(f"{base}/health", timeout=5).read()))
    assert health["healthy"] is True and health["last_batch_at"]
    metrics = (await asyncio.to_thread(lambda: urllib.request.urlopen(f"{base}/metrics", timeout=5).read())).decode()
    assert 'healthbook_events_total{outcome="accepted"}' in metrics
    assert "healthbook_batch_seconds_bucket" in metrics
    assert "healthbook_consumer_lag_messages{partition=" in metrics
    await identity.ask(confirmation(person.personal_id, 2026))
    query = f"http://127.0.0.1:{settings.query_metrics_port}"
    query_health = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(f"{query}/health").read()))
    assert query_health == {"service": "query-consumer", "healthy": True}
    query_metrics = (await asyncio.to_thread(lambda: urllib.request.urlopen(f"{query}/metrics").read())).decode()
    assert 'healthbook_integration_requests_total{outcome="ok"}' in query_metrics
