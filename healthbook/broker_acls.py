"""Who may do what on the broker: the ACLs of each role principal on a deployment's topics and groups.

KRaft's StandardAuthorizer allows nothing without an ACL, so this list is the whole of what each
principal can do. `healthbook topics` grants it (idempotently) together with creating the topics.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from healthbook.config import Settings
from schemas.topic_names import released_topic

# Kafka's protocol codes (org.apache.kafka.common.acl / resource).
TOPIC, GROUP = 2, 3
LITERAL, PREFIXED = 3, 4
ALL, READ, WRITE, DESCRIBE = 2, 3, 4, 8
ALLOW = 3


class AclRefused(RuntimeError):
    """The broker refused to record an ACL; the admin principal may lack the rights, or the broker has no authorizer."""


@dataclass(frozen=True)
class Grant:
    """One ACL: principal may do operation on a topic or group (named exactly, or every name with the prefix)."""

    principal: str
    operation: int
    resource_type: int
    name: str
    pattern: int = LITERAL


def role_grants(settings: Settings) -> list[Grant]:
    """Every role principal's ACLs on the topics and groups these settings name."""
    t = settings.topics
    reads = {
        "worker": [t.visits, t.clinic_keys, t.identity_cards, t.dead_letter],
        "query": [t.integration_requests],
        "key-registry": [t.clinic_keys],
        "analytics": [t.deidentified],
        "operator": [t.dead_letter, t.visits, t.clinic_keys, t.identity_cards],
        "identity-platform": [t.integration_replies],
    }
    writes = {
        "worker": [t.dead_letter, t.deidentified],
        "query": [t.integration_replies],
        "key-registry": [t.clinic_keys],
        "insurance-registry": [t.identity_cards],
        "operator": [t.visits],
        "identity-platform": [t.integration_requests],
    }
    grants = [Grant(p, READ, TOPIC, topic) for p, topics in reads.items() for topic in topics]
    grants += [Grant(p, WRITE, TOPIC, topic) for p, topics in writes.items() for topic in topics]
    grants += [
        Grant("worker", READ, GROUP, settings.worker_app_id, PREFIXED),  # and a second worker named after it
        Grant("worker", ALL, TOPIC, f"{settings.worker_app_id}-", PREFIXED),  # faust's changelog and leader topics
        Grant("query", READ, GROUP, settings.query_group_id),
        # the analytics release stage writes every subscriber's topic and reads its tail back after a restart
        Grant("analytics", WRITE, TOPIC, f"{settings.topic_prefix}analytics.", PREFIXED),
        Grant("analytics", READ, TOPIC, f"{settings.topic_prefix}analytics.", PREFIXED),
    ]
    return grants


def clinic_grants(settings: Settings, clinic_code: str) -> list[Grant]:
    """A clinic's ACLs: write its signed visits, nothing else (not even read them back)."""
    return [Grant(clinic_principal(clinic_code), WRITE, TOPIC, settings.topics.visits)]


def subscriber_grants(settings: Settings, subscriber: str) -> list[Grant]:
    """An analytics subscriber's ACLs: read its own released visits, and no other topic."""
    return [Grant(subscriber_principal(subscriber), READ, TOPIC,
                  f"{settings.topic_prefix}{released_topic(subscriber)}")]


def subscriber_principal(subscriber: str) -> str:
    """The broker principal of an analytics subscriber."""
    return f"analytics-{subscriber}"


def clinic_principal(clinic_code: str) -> str:
    """The broker principal of a clinic."""
    return f"clinic-{clinic_code}"


async def grant(client: AIOKafkaAdminClient, grants: list[Grant]) -> None:
    """Record the ACLs (recording one that exists changes nothing)."""
    for item in grants:
        response = await client._send_request(CreateAclsRequest(  # aiokafka has no public ACL call
            item.resource_type, item.name, item.pattern, f"User:{item.principal}", "*", item.operation, ALLOW))
        refused = [(code, message) for code, message in response.creation_responses if code]
        if refused:
            raise AclRefused(f"the broker refused the ACL {item}: error {refused[0][0]} {refused[0][1] or ''}")
