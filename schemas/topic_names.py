"""The base name of every topic healthbook owns, and the schema subject of a topic's values, written once.

`schemas/topics.py` defines each topic around its name; `schemas/catalogue.py` derives each
schema's subject from it.
"""

from __future__ import annotations

VISITS = "visits"
DEAD_LETTER = "visits.dlq"
CLINIC_KEYS = "clinic.keys"
IDENTITY_CARDS = "identity.cards"
DEIDENTIFIED = "visits.deidentified"
RELEASED = "analytics.visits"  # not a topic: the subject of every analytics.<subscriber>.visits topic's values
INTEGRATION_REQUESTS = "integration.requests"
INTEGRATION_REPLIES = "integration.replies"
VISIT_PAYLOAD = "visits-payload"  # not a topic: the visit event inside a signed visit's payload


def released_topic(subscriber: str) -> str:
    """The base name of one analytics subscriber's topic of released visits."""
    return f"analytics.{subscriber}.visits"


def value_subject(topic: str) -> str:
    """The schema-registry subject of a topic's values (TopicNameStrategy)."""
    return f"{topic}-value"

