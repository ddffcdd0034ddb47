"""The one place Kafka clients are made, with the project's defaults, and the idempotent creation of its topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.admin import AlterPartitionReassignmentsRequest
from aiokafka.structs import ConsumerRecord

from domain.analytics_policy import PolicyError, load_policies
from healthbook import broker_acls
from healthbook.config import Settings
from healthbook.replica_plan import NotEnoughBrokers, realigned
from healthbook.retry import is_broker_unreachable, while_unreachable
from schemas.topics import (
    CHANGELOG_CONFIG,
    DEAD_LETTER,
    TOPICS,
    TopicDefinition,
    broker_config,
    max_message_bytes,
    released,
)

CLIENT_PREFIX = "healthbook"
# A group's leader assigns partitions from the metadata it holds: a member that joined while the broker
# was restarting saw no topics, was assigned nothing, and waited for the next refresh (Kafka's default
# is every 5 minutes) before the group was rebalanced. Refreshing often bounds that wait.
METADATA_MAX_AGE_MS = 15_000

log = logging.getLogger(__name__)


class TopicMissing(RuntimeError):
    """A topic healthbook needs does not exist on the broker."""


class NoKafkaLogin(RuntimeError):
    """The process has no principal or password to log in to the broker with."""


@dataclass(frozen=True)
class Login:
    """How this process reaches the broker: protocol, the CA that signed the broker's certificate, principal."""

    protocol: str
    ca_file: Path
    user: str
    password: str
    credentials_dir: Path

    @classmethod
    def of(cls, settings: Settings, user: str | None = None) -> Login:
        """The login the settings name, or that of another principal whose password file this machine holds."""
        user = user or settings.kafka_user
        if settings.kafka_security_protocol == "PLAINTEXT":
            return cls("PLAINTEXT", settings.kafka_ca_file, "", "", settings.kafka_credentials_dir)
        if not user:
            raise NoKafkaLogin("no Kafka principal is set: set HEALTHBOOK_KAFKA_USER (each healthbook command sets "
                               "its own role's by default)")
        secret = settings.kafka_credentials_dir / user
        if not secret.exists():
            raise NoKafkaLogin(f"no password for Kafka principal '{user}' at {secret} "
                               "(HEALTHBOOK_KAFKA_CREDENTIALS_DIR); 'make up' makes the local stack's")
        return cls(settings.kafka_security_protocol, settings.kafka_ca_file, user, secret.read_text().strip(),
                   settings.kafka_credentials_dir)

    def held(self, user: str) -> Login | None:
        """Another principal's login, if this machine holds its password (a clinic's, on the clinic's machine)."""
        secret = self.credentials_dir / user
        if self.protocol == "PLAINTEXT" or not secret.exists():
            return None
        return Login(self.protocol, self.ca_file, user, secret.read_text().strip(), self.credentials_dir)

    def tls(self) -> ssl.SSLContext:
        """The TLS context that trusts only the broker's CA."""
        return _tls(self.ca_file)

    def options(self) -> dict[str, Any]:
        """aiokafka client options for this login."""
        if self.protocol == "PLAINTEXT":
            return {}
        return {"security_protocol": self.protocol, "ssl_context": self.tls(),
                "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": self.user,
                "sasl_plain_password": self.password}


@cache
def _tls(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context that trusts only the CA of the broker's certificate and checks its name."""
    return ssl.create_default_context(cafile=str(ca_file))


@dataclass(frozen=True)
class Broker:
    """How one process reaches Kafka, built once where the process starts: where, as whom, the largest record."""

    bootstrap: str
    login: Login
    largest_message: int  # the largest record any healthbook topic accepts: a dead letter of the largest visit

    @classmethod
    def of(cls, settings: Settings, user: str | None = None) -> Broker:
        """The broker as the settings name it, logged in as user (default: HEALTHBOOK_KAFKA_USER)."""
        return cls(settings.bootstrap, Login.of(settings, user),
                   max_message_bytes(DEAD_LETTER, settings.max_visit_bytes))

    def as_user(self, user: str) -> Broker | None:
        """The same broker as another principal whose password this machine holds, or None."""
        held = self.login.held(user)
        return None if held is None else replace(self, login=held)

    def options(self) -> dict[str, Any]:
        """aiokafka options every client of this process shares."""
        return {"bootstrap_servers": self.bootstrap, **self.login.options()}


def clinic_broker(settings: Settings, clinic_code: str) -> Broker:
    """The broker as a clinic's publisher reaches it: as clinic-<MA_CSKCB> where this machine holds that login.

    An operator's machine without it publishes as the principal HEALTHBOOK_KAFKA_USER names, if any.
    """
    principal = f"clinic-{clinic_code}"
    if settings.kafka_security_protocol == "PLAINTEXT" or (settings.kafka_credentials_dir / principal).exists():
        return Broker.of(settings, principal)
    if settings.kafka_user:
        return Broker.of(settings)
    raise NoKafkaLogin(f"this machine holds no broker login for clinic {clinic_code} (no password file "
                       f"{settings.kafka_credentials_dir / principal}); on the local stack run 'healthbook broker "
                       f"add-clinic --clinic {clinic_code}', elsewhere ask the operator for the clinic's login")


def producer(broker: Broker, client: str, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all producer named healthbook-<client>; overrides tune batching or timeouts."""
    options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5,
                               "max_request_size": broker.largest_message, **broker.options()}
    options.update(overrides)
    return AIOKafkaProducer(client_id=f"{CLIENT_PREFIX}-{client}", **options)


def consumer(broker: Broker, client: str, *topics: str, group_id: str | None = None,
             **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that never commits on its own and starts from the earliest offset; no group unless given."""
    options: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest",
                               "max_partition_fetch_bytes": broker.largest_message,
                               "metadata_max_age_ms": METADATA_MAX_AGE_MS, **broker.options()}
    options.update(overrides)
    return AIOKafkaConsumer(*topics, group_id=group_id, client_id=f"{CLIENT_PREFIX}-{client}", **options)


T = TypeVar("T")
Client = TypeVar("Client", AIOKafkaConsumer, AIOKafkaProducer)


async def while_broker_away(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run attempt until the broker answers it, asking again every 0.5 s up to every 5 s."""
    return await while_unreachable(f"{what}: the broker does not answer", attempt, away=is_broker_unreachable,
                                   most_seconds=5.0)


async def started(make: Callable[[], Client]) -> Client:
    """A client from make(), started once the broker answers (a client whose start failed is not reused)."""
    async def attempt() -> Client:
        client = make()
        try:
            await client.start()
        except Exception:
            with contextlib.suppress(Exception):
                await client.stop()
            raise
        return client

    return await while_broker_away("start a Kafka client", attempt)


def admin(broker: Broker, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client for topic creation and description."""
    return AIOKafkaAdminClient(client_id=f"{CLIENT_PREFIX}-admin", **broker.options(), **overrides)


def topic_names(settings: Settings) -> dict[str, TopicDefinition]:
    """Every topic healthbook creates, by its prefixed name."""
    return {settings.topic_prefix + topic.name: topic for topic in TOPICS}


def worker_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """The faust worker's own topics (its dedup changelog and its assignor's), as partitions and configuration.

    `healthbook topics` makes them before the worker starts, so a worker never has to create a topic
    while a broker is away (a replication factor the cluster cannot meet then stops a starting worker).
    """
    replicated = settings.replication.config()
    return {settings.dedup_changelog: (settings.visit_partitions, {**CHANGELOG_CONFIG, **replicated}),
            f"{settings.worker_app_id}-__assignor-__leader": (1, replicated)}


def subscriber_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Each analytics subscriber's topic of released visits, from the policy files (none if they cannot be read)."""
    try:
        policies = load_policies(settings.analytics_policy_dir)
    except PolicyError as exc:
        log.warning("no analytics subscriber topics: %s", exc)
        return {}
    return {settings.topic_prefix + released(p.name).name: (1, broker_config(released(p.name), settings.max_visit_bytes,
                                                                             settings.replication))
            for p in policies}


async def ensure_topics(settings: Settings, broker: Broker) -> list[str]:
    """Create any missing topic of the catalogue, realign existing ones and grant each role its ACLs.

    Existing topics, the worker's own included, are brought to the replication the settings ask for
    (HEALTHBOOK_BROKERS): partitions gain or lose replicas and `min.insync.replicas` is set.
    Clinics whose broker login this machine holds (the local stack's) may write these visits.
    Returns the names created.
    """
    replication = settings.replication
    client = admin(broker)
    await client.start()
    try:
        existing = set(await client.list_topics())
        brokers = [b["node_id"] for b in (await client.describe_cluster())["brokers"]]
        if len(brokers) < replication.factor:
            raise NotEnoughBrokers(f"HEALTHBOOK_BROKERS={settings.brokers} asks for {replication.factor} replicas of "
                                   f"every partition but {settings.bootstrap} has {len(brokers)} live broker(s): "
                                   "start the others, or set HEALTHBOOK_BROKERS to the number there are")
        specs = {name: (t.partitions_for(settings.visit_partitions),
                        broker_config(t, settings.max_visit_bytes, replication))
                 for name, t in topic_names(settings).items()}
        specs.update(worker_topics(settings))
        specs.update(subscriber_topics(settings))
        present = sorted(name for name in specs if name in existing)
        await _align_configs(client, {name: specs[name][1] for name in present})
        await _align_replicas(client, present, brokers, replication.factor)
        if settings.kafka_security_protocol != "PLAINTEXT":
            await broker_acls.grant(client, broker_acls.role_grants(settings) + [
                g for held in sorted(settings.kafka_credentials_dir.glob("clinic-*"))
                for g in broker_acls.clinic_grants(settings, held.name.removeprefix("clinic-"))] + [
                g for held in sorted(settings.kafka_credentials_dir.glob("analytics-*"))
                for g in broker_acls.subscriber_grants(settings, held.name.removeprefix("analytics-"))])
        wanted = {name: spec for name, spec in specs.items() if name not in existing}
        if not wanted:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):
            response = await client.create_topics([
                NewTopic(name, partitions, replication.factor, topic_configs=config)
                for name, (partitions, config) in wanted.items()])
            refused = [(error[0], error[-1] or f"error code {error[1]}") for error in response.topic_errors
                       if error[1] not in (0, TopicAlreadyExistsError.errno)]
            if refused:
                raise TopicMissing("the broker refused to create " + "; ".join(f"{n}: {m}" for n, m in refused))
        await _wait_for_leaders(client, list(wanted))
        return list(wanted)
    finally:
        await client.close()


async def grant(broker: Broker, grants: list[broker_acls.Grant]) -> None:
    """Record ACLs on the broker, as this process's (admin) principal."""
    client = admin(broker)
    await client.start()
    try:
        await broker_acls.grant(client, grants)
    finally:
        await client.close()


DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source of a value set on the topic itself


async def _align_configs(client: AIOKafkaAdminClient, configs: dict[str, dict[str, str]]) -> None:
    """Give existing topics the configuration asked for (say, append-time stamps added to a topic made before).

    AlterConfigs replaces a topic's whole set, so what was set on it before and is not asked about
    (faust's compaction of its changelog) is written back with it.
    """
    if not configs:
        return
    described = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in configs])
    current: dict[str, dict[str, str]] = {}
    own: dict[str, dict[str, str]] = {}
    for response in described:
        for resource in response.resources:
            current[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
            own[resource[3]] = {entry[0]: entry[1] for entry in resource[4] if entry[3] == DYNAMIC_TOPIC_CONFIG}
    stale = [name for name, c in configs.items() if any(current.get(name, {}).get(k) != v for k, v in c.items())]
    if stale:
        await client.alter_configs([
            ConfigResource(ConfigResourceType.TOPIC, name, {**own.get(name, {}), **configs[name]}) for name in stale])


async def _align_replicas(client: AIOKafkaAdminClient, names: list[str], brokers: list[int], factor: int,
                          timeout: float = 300.0) -> None:
    """Give every partition of the topics `factor` replicas and wait until they are all in sync."""
    if not names:
        return
    plan: dict[str, dict[int, list[int]]] = {}
    for described in await client.describe_topics(names):
        for p in described["partitions"]:
            target = realigned(list(p["replicas"]), brokers, factor, p["partition"])
            if target is not None:
                plan.setdefault(described["topic"], {})[p["partition"]] = target
    if not plan:
        return
    response = await client._send_to_controller(AlterPartitionReassignmentsRequest(
        timeout_ms=60_000, tags={},
        topics=[(topic, [(partition, replicas, {}) for partition, replicas in partitions.items()], {})
                for topic, partitions in plan.items()]))
    refused = [f"{topic}[{p[0]}]: {p[2] or f'error code {p[1]}'}" for topic, parts, _ in response.responses
               for p in parts if p[1]]
    if response.error_code or refused:
        raise TopicMissing(f"the cluster refused to move replicas: {response.error_message or '; '.join(refused)}")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = {d["topic"]: {p["partition"]: p for p in d["partitions"]}
                     for d in await client.describe_topics(list(plan))}
        behind = [f"{topic}[{partition}]" for topic, partitions in plan.items()
                  for partition, replicas in partitions.items()
                  if sorted(described[topic][partition]["replicas"]) != sorted(replicas)
                  or len(described[topic][partition]["isr"]) < factor]
        if not behind:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TopicMissing(f"{len(behind)} partitions did not reach {factor} in-sync replicas within "
                               f"{timeout:.0f}s ({', '.join(behind[:5])}…); see the brokers' logs")
        await asyncio.sleep(0.5)


async def _wait_for_leaders(client: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Return once every partition of the new topics has a leader, so the first send does not fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await client.describe_topics(names)
        if all(not d["error_code"] and d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])
               for d in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TopicMissing(f"topics {names} have no partition leaders after {timeout:.0f}s; is the broker healthy?")
        await asyncio.sleep(0.2)


async def partitions_of(broker: Broker, topic: str) -> list[int]:
    """The partition numbers of a topic, or raise TopicMissing."""
    client = admin(broker)
    await client.start()
    try:
        (described,) = await client.describe_topics([topic])
    finally:
        await client.close()
    if described["error_code"] or not described["partitions"]:
        raise TopicMissing(f"topic {topic} does not exist on {broker.bootstrap}; create the topics with "
                           "'healthbook topics'")
    return sorted(p["partition"] for p in described["partitions"])


async def send_all(broker: Broker, client: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) records in order and wait until the broker acknowledged each one."""
    sender = producer(broker, client)
    await sender.start()
    try:
        for key, value in records:
            await sender.send_and_wait(topic, value, key=key)
    finally:
        await sender.stop()


async def end_offsets(broker: Broker, topic: str) -> dict[int, int]:
    """The next offset to be written on each partition of a topic."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(broker, topic)]
    reader = consumer(broker, "end-offsets")
    await reader.start()
    try:
        return {tp.partition: offset for tp, offset in (await reader.end_offsets(partitions)).items()}
    finally:
        await reader.stop()


RANGE_FETCH_BYTES = 256 * 1024


async def read_range(broker: Broker, topic: str, partition: int, start: int, end: int) -> list[ConsumerRecord]:
    """The records of one partition from offset start up to (not including) end, as the topic still holds them.

    Each fetch asks for RANGE_FETCH_BYTES: the broker still returns a whole first batch however large
    (KIP-74), so a visit of any size is read, but reading one record no longer pulls and decodes up to
    the topic's largest message of its neighbours (a worker resolving cards went from 140 to 585 MiB).
    """
    reader = consumer(broker, "read-range", max_partition_fetch_bytes=RANGE_FETCH_BYTES,
                      fetch_max_bytes=RANGE_FETCH_BYTES)
    await reader.start()
    found: list[ConsumerRecord] = []
    try:
        tp = TopicPartition(topic, partition)
        reader.assign([tp])
        reader.seek(tp, start)
        while await reader.position(tp) < end:
            fetched = await reader.getmany(tp, timeout_ms=10_000, max_records=end - start)
            if not fetched:
                break
            found += [r for r in fetched.get(tp, []) if start <= r.offset < end]
        return found
    finally:
        await reader.stop()
