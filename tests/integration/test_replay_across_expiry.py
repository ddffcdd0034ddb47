"""A clinic's history outlives its certificate: validity is judged at each visit's signed_at, live and in replay."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from commands.local_ca import CLINIC_DAYS, local_ca
from commands.processes import ServiceProcess
from consumers.dead_letters import read_dead_letters
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from producers.clinic_keys import rotation
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer, now_millis
from tests.factories import visit
from tests.integration.conftest import (
    LOGS,
    new_citizen,
    next_sequence,
    register,
    visible,
    wait_until,
)
from tests.integration.test_cli import healthbook

pytestmark = pytest.mark.integration
BOOK = ("select facility_code, visit_code, personal_id, version, event_id, clinic_key_id, signature, signed_at "
        "from health_book_visits order by facility_code, visit_code")
VALID_FOR = timedelta(seconds=25)  # what is left of the first key's certificate when the test starts


async def _publish(settings, signer: Signer, events: list[dict]) -> None:
    async with ClinicPublisher(clinic_broker(settings, "79001"), settings.topics.visits, "79001", signer) as pub:
        await pub.publish_all(events)


async def test_a_rebuilt_book_keeps_every_visit_signed_before_expiry_and_rotation(settings):
    own = settings.model_copy(update={
        "topic_prefix": f"test-expiry-{uuid.uuid4().hex[:8]}.", "worker_metrics_port": 0,
        "database_url": await recreate_database(settings.database_url, "healthbook_test_expiry")})
    await ensure_topics(own, Broker.of(own))
    ca = local_ca(own)
    old_signer, new_signer = Signer.generate("k1"), Signer.generate("k2")
    old = ca.entry("79001", old_signer, not_before=datetime.now(UTC) + VALID_FOR - timedelta(days=CLINIC_DAYS))
    expires = x509.load_der_x509_certificate(old.certificate).not_valid_after_utc
    await register(own, old)
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)
    worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}.log").start()
    try:
        signed_while_valid = [visit(person=new_citizen(), sequence=next_sequence()) for _ in range(3)]
        await _publish(own, old_signer, signed_while_valid)
        for event in signed_while_valid:
            await wait_until(lambda e=event: visible(pool, "79001", e["visit_code"]), "the visits signed with k1",
                             process=worker)
        assert datetime.now(UTC) < expires, "the visits above must be signed inside the certificate's validity"
        await register(own, *rotation(old, "79001", ca.entry("79001", new_signer), now_millis(), 3_600_000))
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 2)
        signed_after_expiry = visit(person=new_citizen(), sequence=next_sequence())
        with_the_new_key = visit(person=new_citizen(), sequence=next_sequence())
        await _publish(own, old_signer, [signed_after_expiry])
        await _publish(own, new_signer, [with_the_new_key])
        await wait_until(lambda: visible(pool, "79001", with_the_new_key["visit_code"]), "the visit signed with k2",
                         process=worker)
        await wait_until(lambda: pool.fetchval(
            "select count = 5 from pipeline_counts where outcome = 'consumed'"), "all five visits", process=worker)
        live = [tuple(r) for r in await pool.fetch(BOOK)]
        counts = dict(await pool.fetch("select outcome, count from pipeline_counts where count <> 0"))
    finally:
        worker.stop()
    letters = await read_dead_letters(Broker.of(own), own.topics.dead_letter)
    # Years later, as far as the certificate is concerned: replay reads the registry after the expiry.
    replayed = await asyncio.to_thread(healthbook, own, "replay")
    rebuilt = [tuple(r) for r in await pool.fetch(BOOK)]
    await pool.close()
    assert len(live) == 4 and {r[1] for r in live} == {e["visit_code"] for e in [*signed_while_valid,
                                                                               with_the_new_key]}
    assert counts.get("rejected:certificate_expired") == 1 and "rejected:unknown_key" not in counts
    (letter,) = letters
    assert letter["reason_code"] == "certificate_expired" and letter["event_id"] == signed_after_expiry["event_id"]
    assert "expired at" in letter["reason"] and "healthbook clinic rotate" in letter["reason"]
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 5 messages into 4 health-book rows" in replayed.stdout
    assert rebuilt == live
