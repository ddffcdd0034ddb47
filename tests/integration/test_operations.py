"""Operator tools on the real stack: dead-letter re-drive, replay with swap, status, metrics and health."""

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from commands.identity_standin import confirmation
from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT
from producers.clinic_keys import load_signer
from schemas.envelope import Signer, now_millis, seal_visit
from tests.factories import visit
from tests.integration.conftest import certified, new_citizen, next_sequence, register, visible, wait_until

pytestmark = pytest.mark.integration


def healthbook(settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=PROJECT_ROOT,
                          env=settings_env(settings), capture_output=True, text=True, timeout=timeout)


async def test_a_clinic_that_follows_the_unknown_clinic_advice_gets_its_visit_projected_exactly_once(
        clinics, db, settings):
    """Signed by an unregistered clinic -> dead-lettered -> its existing certified key registered -> re-driven."""
    assert healthbook(settings, "clinic", "keygen", "--clinic", "56010").returncode == 0  # on the clinic's machine
    request = settings.key_dir / "56010" / "k1.csr"
    assert healthbook(settings, "ca", "issue", "--clinic", "56010", str(request)).returncode == 0  # the CA certifies it
    held = load_signer(settings.key_dir, "56010", "k1")
    person = new_citizen()
    event = visit(person=person, facility="56010", sequence=next_sequence())
    forged = visit(person=person, sequence=next_sequence())
    async with clinics.publisher() as pub:
        key = person.personal_id.encode()
        await (await pub.publish_raw(key, seal_visit(event, "56010", held)))
        await (await pub.publish_raw(key, seal_visit(forged, "79001", Signer("k1", Signer.generate("x").private_key))))
    await clinics.barrier(person)
    (letter,) = [d for d in await clinics.dead_letters() if d["event_id"] == event["event_id"]]
    assert letter["reason_code"] == "unknown_clinic" and "healthbook clinic keygen --clinic 56010" in letter["reason"]

    registered = healthbook(settings, "clinic", "register", "--clinic", "56010", "--certificate",
                            str(request.with_suffix(".crt")))
    assert registered.returncode == 0, registered.stderr
    listed = healthbook(settings, "dlq", "list", "--clinic", "56010")
    assert "unknown_clinic" in listed.stdout
    first = healthbook(settings, "dlq", "retry", "--clinic", "56010", "--reason", "unknown_clinic")
    assert first.returncode == 0 and first.stdout.startswith("re-driven 1;"), first.stdout + first.stderr
    await wait_until(lambda: visible(db, "56010", event["visit_code"]), "the re-driven visit", process=clinics.worker)
    assert await db.fetchval("select count(*) from health_book_visits where facility_code = '56010'") == 1
    again = healthbook(settings, "dlq", "retry", "--clinic", "56010", "--reason", "unknown_clinic")
    assert "re-driven 0;" in again.stdout
    await clinics.barrier(person)
    assert await db.fetchval("select count(*) from health_book_visits where facility_code = '56010'") == 1

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


async def test_a_redriven_visit_is_judged_by_when_the_broker_first_appended_it(clinics, db, settings):
    late = Signer.generate("k1")
    entry = certified(settings, "56011", late, not_before=datetime.now(UTC) - timedelta(days=1))
    person = new_citizen()
    event = visit(person=person, facility="56011", sequence=next_sequence())
    signed_at = now_millis() - settings.signed_at_max_delay_seconds * 1000 + 6_000  # just inside the window now
    async with clinics.publisher("56011", late) as pub:
        sealed = seal_visit(event, "56011", late, signed_at=signed_at)
        await (await pub.publish_raw(person.personal_id.encode(), sealed))
    await clinics.barrier(person)
    await register(settings, entry)
    while now_millis() < signed_at + settings.signed_at_max_delay_seconds * 1000 + 1_000:
        await asyncio.sleep(0.5)  # the re-drive's own append time is now outside the window; the original's is not
    retried = healthbook(settings, "dlq", "retry", "--clinic", "56011", "--reason", "unknown_clinic")
    assert retried.stdout.startswith("re-driven 1;"), retried.stdout + retried.stderr
    await wait_until(lambda: visible(db, "56011", event["visit_code"]), "the re-driven visit", process=clinics.worker)


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


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


async def test_an_expired_revocation_list_fails_closed_and_status_and_health_say_so(clinics, settings, ca):
    current = {entry.serial_number: entry.revocation_date_utc for entry in ca.clinics.revocation_list()}
    ca.clinics.write_crl(current, next_update=datetime.now(UTC) - timedelta(minutes=1))
    try:
        code, health = await wait_until(
            lambda: _unhealthy(settings.worker_metrics_port), "the running worker to notice the expired list",
            process=clinics.worker)
        assert code == 503 and any("expired" in p for p in health["revocation_lists_failing_closed"])
        shown = healthbook(settings, "status")
        assert "FAILING CLOSED" in shown.stdout and "healthbook local CA" in shown.stdout, shown.stdout
    finally:
        ca.clinics.write_crl(current)
    await wait_until(lambda: _healthy_again(settings.worker_metrics_port), "the worker to be healthy again",
                     process=clinics.worker)
    assert "every trusted CA's list is verified and current" in healthbook(settings, "status").stdout


async def _unhealthy(port: int) -> tuple[int, dict] | None:
    code, health = await asyncio.to_thread(_health, port)
    return (code, health) if health.get("revocation_lists_failing_closed") else None


async def _healthy_again(port: int) -> bool:
    code, health = await asyncio.to_thread(_health, port)
    return code == 200 and health["healthy"] is True
