"""The one definition of every topic healthbook owns: name, partitions, retention, key rule and value schema.

Topic creation, the faust worker, publishers and consumers (through `TopicNames`), the README's
topic table and the compose check all read this list; change a topic here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import catalogue
from schemas import topic_names as names
from schemas.catalogue import SchemaEntry

DAY_MS = 24 * 3600 * 1000
FOLLOWS_VISITS = 0  # partitions: as many as the visits topic (HEALTHBOOK_VISIT_PARTITIONS)

_FOREVER = {"retention.ms": "-1", "cleanup.policy": "delete"}
_COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}


def _days(n: int) -> dict[str, str]:
    return {"retention.ms": str(n * DAY_MS)}


@dataclass(frozen=True)
class TopicDefinition:
    """One topic: its name without prefix, partitions, broker configuration, key rule and value schema."""

    attribute: str  # the name code uses: settings.topics.<attribute>
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    retention: str = ""
    key: str = ""
    schema: SchemaEntry | None = None
    value: str = ""
    purpose: str = ""

    def partitions_for(self, visit_partitions: int) -> int:
        """How many partitions the topic has when the visits topic has visit_partitions."""
        return visit_partitions if self.partitions == FOLLOWS_VISITS else self.partitions


VISITS = TopicDefinition(
    # The broker stamps each visit with its append time: a clinic's signed_at is judged against it.
    "visits", names.VISITS, FOLLOWS_VISITS, {**_FOREVER, "message.timestamp.type": "LogAppendTime"},
    "forever (replayable)",
    "personal ID, or `card:` and the BHYT card number for a record without one", catalogue.SIGNED_VISIT,
    "`SignedVisit`", "signed visit events from clinics; kept forever so the book can be replayed")
DEAD_LETTER = TopicDefinition(
    "dead_letter", names.DEAD_LETTER, 1, _days(90), "90 days", "original key", catalogue.DEAD_LETTER,
    "`DeadLetter`: reason code, sentence, problems, source topic/partition/offset, original key and bytes",
    "rejected messages with reason and original bytes")
CLINIC_KEYS = TopicDefinition(
    "clinic_keys", names.CLINIC_KEYS, 1, _COMPACTED, "compacted", "`clinic_code/key_id`", catalogue.CLINIC_KEY,
    "`ClinicKey`; a tombstone removes a key", "clinic public keys")
IDENTITY_CARDS = TopicDefinition(
    "identity_cards", names.IDENTITY_CARDS, 1, _COMPACTED, "compacted", "card number", catalogue.IDENTITY_CARD,
    "`IdentityCard`: which citizen a BHYT card belongs to", "BHYT card to personal ID")
DEIDENTIFIED = TopicDefinition(
    "deidentified", names.DEIDENTIFIED, FOLLOWS_VISITS, _days(365), "1 year", "pseudonym",
    catalogue.DEIDENTIFIED_VISIT, "`DeidentifiedVisit`, internal: read only by the analytics release stage",
    "visits without identities for analytics")
INTEGRATION_REQUESTS = TopicDefinition(
    # The broker's append time starts the citizen's wait as healthbook_request_seconds measures it.
    "integration_requests", names.INTEGRATION_REQUESTS, 2, {**_days(7), "message.timestamp.type": "LogAppendTime"},
    "7 days", "personal ID",
    catalogue.INTEGRATION_REQUEST, "`IntegrationRequest`, signed by the identity platform",
    "citizen confirmations signed by the identity platform")
INTEGRATION_REPLIES = TopicDefinition(
    "integration_replies", names.INTEGRATION_REPLIES, 2, _days(1), "1 day", "request id", catalogue.INTEGRATION_REPLY,
    "`IntegrationReply`", "health-book answers")



def released(subscriber: str) -> TopicDefinition:
    """One analytics subscriber's topic: one partition, so its release order is the topic's order."""
    return TopicDefinition(
        "released", names.released_topic(subscriber), 1, _days(365), "1 year", "the subscriber's `visit_ref`",
        catalogue.RELEASED_VISIT, "`ReleasedVisit`, header `release-seq`",
        "one subscriber's k-anonymous visits, as its policy gives them")


DEFAULT_MAX_VISIT_BYTES = 4 * 1024 * 1024
RECORD_OVERHEAD = 64 * 1024  # key, headers and record-batch framing around one value
MAX_LISTED_PROBLEMS = 100  # a dead letter lists at most this many problems; its original bytes hold the rest
MAX_PROBLEM_VALUE_CHARS = 1000


def max_message_bytes(topic: TopicDefinition, max_visit_bytes: int) -> int:
    """The broker's `max.message.bytes` for a topic when the largest visit is max_visit_bytes.

    A dead letter carries the refused bytes, the reason and up to MAX_LISTED_PROBLEMS problems, so
    its topic takes twice a visit and a mebibyte more; every other record is at most about a visit.
    """
    if topic is DEAD_LETTER:
        return 2 * max_visit_bytes + 1024 * 1024
    return max_visit_bytes + RECORD_OVERHEAD


@dataclass(frozen=True)
class Replication:
    """How many brokers hold each partition, and how many of them must have a write before it is acknowledged."""

    factor: int
    min_in_sync: int

    @classmethod
    def for_brokers(cls, brokers: int) -> Replication:
        """Three copies and two in sync from three brokers on (one broker may fail or pause); else one of each."""
        if brokers >= 3:
            return cls(3, 2)
        return cls(brokers, 1)

    def config(self) -> dict[str, str]:
        """The topic configuration that goes with it; a stale replica never becomes leader."""
        return {"min.insync.replicas": str(self.min_in_sync), "unclean.leader.election.enable": "false"}


SINGLE_BROKER = Replication(1, 1)

# The dedup changelog takes a whole-citizen entry per batch a citizen appears in, so it grows by
# hundreds of megabytes a day while it holds only one live entry per citizen. Compaction never
# touches the active segment, and with Kafka's default segment of 1 GiB a worker that took over a
# partition read every entry ever written (100 MB per partition after half an hour of soak: a 25 s
# stall and 850 MiB of resident memory). Small segments and eager cleaning keep it near its live size.
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(8 * 1024 * 1024),
                    "min.cleanable.dirty.ratio": "0.1", "segment.ms": str(10 * 60 * 1000)}


def broker_config(topic: TopicDefinition, max_visit_bytes: int,
                  replication: Replication = SINGLE_BROKER) -> dict[str, str]:
    """A topic's full broker configuration: the catalogue's, the message size limit and the replication rule."""
    return {**topic.config, "max.message.bytes": str(max_message_bytes(topic, max_visit_bytes)),
            **replication.config()}


TOPICS = (VISITS, DEAD_LETTER, CLINIC_KEYS, IDENTITY_CARDS, DEIDENTIFIED, INTEGRATION_REQUESTS, INTEGRATION_REPLIES)
DEDUP_TABLE = "visit-versions"  # faust table; its changelog topic is <worker app id>-visit-versions-changelog


class TopicNames:
    """Names of healthbook's topics under one prefix (the demo, tests and benchmarks use a prefix each)."""

    visits: str
    dead_letter: str
    clinic_keys: str
    identity_cards: str
    deidentified: str
    integration_requests: str
    integration_replies: str

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        for topic in TOPICS:
            setattr(self, topic.attribute, prefix + topic.name)


def readme_table(visit_partitions: int) -> str:
    """The README's topic table, rendered from this catalogue (a unit test keeps README in step)."""
    lines = ["| topic | partitions | retention | key | value |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{t.name}` | {t.partitions_for(visit_partitions)} | {t.retention} | {t.key} | {t.value} |"
              for t in TOPICS]
    return "\n".join(lines)
