"""The secured broker: TLS only, SCRAM logins, and each principal limited to its role's ACLs."""

import asyncio
import os
import shutil
import ssl
import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from healthbook import kafka
from healthbook.config import PROJECT_ROOT
from healthbook.kafka import Broker
from tests.factories import visit
from tests.integration.conftest import map_cards, new_citizen, next_sequence, visible, wait_until
from tests.integration.test_cli import healthbook

pytestmark = pytest.mark.integration


async def _can_write(settings, principal: Broker, topic: str) -> bool:
    """Whether a principal gets one record onto topic (checked by the admin reading the topic's end)."""
    before = await kafka.end_offsets(Broker.of(settings), topic)
    sender = kafka.producer(principal, "security-probe", request_timeout_ms=4000, enable_idempotence=False)
    try:
        await sender.start()
        await asyncio.wait_for(sender.send_and_wait(topic, b"probe", key=b"probe"), 8)
    except (KafkaError, TimeoutError):
        pass
    finally:
        await sender.stop()
    return await kafka.end_offsets(Broker.of(settings), topic) != before


async def _read(settings, principal: Broker | None, topic: str) -> str:
    """Try to fetch from a partition of topic that holds records: 'read', or 'denied' with the broker's error."""
    ends = await kafka.end_offsets(Broker.of(settings), topic)
    holding = [p for p, end in ends.items() if end > 0]
    assert holding, f"{topic} must hold a record for this probe to mean anything"
    reader = kafka.consumer(principal or Broker.of(settings), "security-probe", request_timeout_ms=4000)
    try:
        await reader.start()
        partition = TopicPartition(topic, holding[0])
        reader.assign([partition])
        reader.seek(partition, 0)
        fetched = await asyncio.wait_for(reader.getmany(partition, timeout_ms=3000), 8)
        return "read" if fetched.get(partition) else "nothing"
    except KafkaError as exc:
        return f"denied: {type(exc).__name__}"
    finally:
        await reader.stop()


async def _can_read(settings, principal: Broker, topic: str) -> bool:
    assert await _read(settings, None, topic) == "read", "the admin reads it, so a refusal below is the ACL's"
    return await _read(settings, principal, topic) == "read"  # aiokafka logs a refused fetch and returns nothing


@pytest.fixture(scope="module")
async def clinic_login(settings, signers) -> Broker:
    added = healthbook(settings, "broker", "add-clinic", "--clinic", "79001")
    assert added.returncode == 0, added.stderr
    login = Broker.of(settings).as_user("clinic-79001")
    assert login is not None
    return login


async def test_a_clinic_may_write_visits_and_nothing_else_not_even_read(settings, clinics, clinic_login):
    t = settings.topics
    await _records_on_every_topic(settings, clinics)
    assert await _can_write(settings, clinic_login, t.visits)
    for topic in (t.clinic_keys, t.identity_cards, t.integration_requests, t.dead_letter):
        assert not await _can_write(settings, clinic_login, topic), topic
    for topic in (t.visits, t.clinic_keys, t.dead_letter, t.deidentified):
        assert not await _can_read(settings, clinic_login, topic), topic


async def _records_on_every_topic(settings, clinics) -> None:
    """A valid visit, a rejected one and a card mapping, so every probed topic holds something."""
    event = visit(person=new_citizen(), sequence=next_sequence())
    await clinics.publish(event)
    async with clinics.publisher() as pub:
        await (await pub.publish_raw(b"not-a-person", b"not a signed envelope"))
    await map_cards(settings, [(f"TE1{next_sequence():012d}", new_citizen().personal_id)])
    await wait_until(lambda: visible(clinics.pool, "79001", event["visit_code"]), "a visit", process=clinics.worker)
    await wait_until(lambda: _holds(settings, settings.topics.dead_letter), "a dead letter", process=clinics.worker)
    await wait_until(lambda: _holds(settings, settings.topics.deidentified), "an analytics record")


async def _holds(settings, topic: str) -> bool:
    return any((await kafka.end_offsets(Broker.of(settings), topic)).values())


async def test_analytics_reads_only_the_deidentified_topic(settings, clinics, identity):
    from commands.identity_standin import confirmation

    await _records_on_every_topic(settings, clinics)
    await identity.ask(confirmation(new_citizen().personal_id, 2026))
    analytics = Broker.of(settings).as_user("analytics")
    assert analytics is not None
    assert await _can_read(settings, analytics, settings.topics.deidentified)
    for topic in (settings.topics.visits, settings.topics.dead_letter, settings.topics.identity_cards,
                  settings.topics.integration_replies):
        assert not await _can_read(settings, analytics, topic), topic
    assert not await _can_write(settings, analytics, settings.topics.deidentified)


async def test_the_registries_write_only_their_own_topic(settings):
    admin = Broker.of(settings)
    keys, cards = admin.as_user("key-registry"), admin.as_user("insurance-registry")
    assert keys and cards
    assert not await _can_write(settings, keys, settings.topics.identity_cards)
    assert not await _can_write(settings, cards, settings.topics.clinic_keys)
    assert not await _can_write(settings, cards, settings.topics.visits)


async def _connects(settings, **options) -> bool:
    client = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, request_timeout_ms=4000, **options)
    try:
        await asyncio.wait_for(client.start(), 10)
        return True
    except (KafkaError, TimeoutError, OSError, ssl.SSLError):
        return False
    finally:
        await client.stop()


async def test_no_plaintext_no_unknown_ca_no_wrong_password(settings):
    admin = Broker.of(settings).login
    assert await _connects(settings, **admin.options())
    assert not await _connects(settings)  # PLAINTEXT
    untrusting = dict(admin.options(), ssl_context=ssl.create_default_context())
    assert not await _connects(settings, **untrusting)
    assert not await _connects(settings, **dict(admin.options(), sasl_plain_password="guess"))
    assert not await _connects(settings, **dict(admin.options(), sasl_plain_username="nobody"))


def test_no_secret_is_kept_where_git_would_take_it():
    from healthbook.config import PROJECT_ROOT

    ignored = (PROJECT_ROOT / ".gitignore").read_text().split()
    assert ".local/" in ignored and "stack/.kafka/" in ignored


async def test_adding_a_principal_never_puts_its_password_on_a_command_line(settings, tmp_path):
    """Every java command the stack script runs is recorded (a shim ahead on PATH); none may carry the password."""
    shims, calls = tmp_path / "bin", tmp_path / "java-calls"
    shims.mkdir()
    real_java = shutil.which("java")
    assert real_java
    (shims / "java").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>"{calls}"\nexec "{real_java}" "$@"\n')
    (shims / "java").chmod(0o700)
    name = f"probe-{uuid.uuid4().hex[:8]}"
    added = subprocess.run(["bash", str(PROJECT_ROOT / "stack" / "stack.sh"), "add-principal", name],
                           env=dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}"), capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    password = (settings.kafka_credentials_dir / name).read_text().strip()
    assert len(password) >= 16 and calls.read_text().strip(), "the shim saw the script's java commands"
    assert password not in calls.read_text()
    login = Broker.of(settings).as_user(name)
    assert login is not None
    producer = kafka.producer(login, "login-probe", enable_idempotence=False)  # it holds no ACL, not even that
    await producer.start()  # authenticates with the password the broker was given through the file
    await producer.stop()


async def test_an_analytics_subscriber_reads_its_own_topic_and_nothing_else(settings, clinics):
    from streams.analytics_release import released_topic

    admin = Broker.of(settings)
    await _records_on_every_topic(settings, clinics)
    mine, theirs = (released_topic(settings.topic_prefix, name) for name in ("university-research",
                                                                               "health-statistics"))
    for topic in (mine, theirs):
        await kafka.send_all(admin, "security-probe", topic, [(b"probe", b"probe")])
    added = healthbook(settings, "analytics", "add-subscriber", "university-research")
    assert added.returncode == 0, added.stderr
    subscriber = admin.as_user("analytics-university-research")
    assert subscriber is not None
    assert await _can_read(settings, subscriber, mine)
    for topic in (theirs, settings.topics.deidentified, settings.topics.visits, settings.topics.dead_letter):
        assert not await _can_read(settings, subscriber, topic), topic
    assert not await _can_write(settings, subscriber, mine), "a subscriber cannot forge its own feed"

    stage = admin.as_user("analytics")  # the release stage: writes every subscriber's topic, nothing of the book
    assert stage is not None
    assert await _can_write(settings, stage, mine)
    assert not await _can_write(settings, stage, settings.topics.visits)
