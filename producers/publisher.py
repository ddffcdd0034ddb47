"""ClinicPublisher: signs visit events with a clinic's key and publishes them keyed by personal ID."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from healthbook import kafka
from schemas import keys
from schemas.envelope import Signer, seal_payload, seal_visit
from schemas.problems import Problem
from schemas.topics import DEFAULT_MAX_VISIT_BYTES
from schemas.visit import VisitEvent, read_visit


class InvalidVisit(ValueError):
    """The clinic tried to publish a visit that breaks the rules; nothing was sent."""

    def __init__(self, visit_code: str, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(
            f"visit {visit_code} not published: " + "; ".join(p.sentence() for p in problems)
        )


class VisitTooLarge(InvalidVisit):
    """The signed visit is larger than the visits topic accepts; nothing was sent."""


def size_problem(size: int, limit: int) -> Problem | None:
    """The problem with a signed visit of size bytes when the limit is limit, if there is one."""
    if size <= limit:
        return None
    return Problem("SignedVisit", f"{size:,} bytes", "visit_too_large", (
        f"the signed visit is larger than the {limit:,} bytes the visits topic accepts (HEALTHBOOK_MAX_VISIT_BYTES); "
        "the deployment's operator may raise the limit for every topic and producer"))


class ClinicPublisher:
    """An idempotent, acks=all producer that signs each visit of one clinic before sending it."""

    def __init__(self, broker: kafka.Broker, topic: str, clinic_code: str, signer: Signer, *,
                 max_visit_bytes: int = DEFAULT_MAX_VISIT_BYTES, **producer_options: Any) -> None:
        self.topic = topic
        self.clinic_code = clinic_code
        self.signer = signer
        self.max_visit_bytes = max_visit_bytes
        options: dict[str, Any] = {"linger_ms": 10, "max_batch_size": 256 * 1024}
        options.update(producer_options)
        # broker is the clinic's own login (kafka.clinic_broker), allowed only to write visits
        self._producer = kafka.producer(broker, f"clinic-{clinic_code}", **options)

    async def __aenter__(self) -> ClinicPublisher:
        await self._producer.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._producer.stop()

    @staticmethod
    def check(event: dict[str, Any]) -> VisitEvent:
        """Validate a visit before signing; raise InvalidVisit naming each broken rule."""
        checked = read_visit(event)
        if isinstance(checked, list):
            raise InvalidVisit(str(event.get("visit_code")), checked)
        return checked

    async def publish(self, event: dict[str, Any], *, validate: bool = True, payload: bytes | None = None
                      ) -> asyncio.Future:
        """Sign and queue one visit; await the returned future for the broker's acknowledgement.

        With validate (the default) the event is checked and sent as the model reads it, so JSON
        input such as money written as "478000" is encoded with its proper Avro types. A caller that
        already encoded the event (ingest, to check its size) passes it as payload.
        """
        if validate:
            model = self.check(event)
            record, key = model.model_dump(), model.partition_key
        else:
            patient = event["patient"]
            record, key = event, keys.partition_key(patient.get("personal_id"), patient["insurance_card_numbers"])
        value = (seal_visit(record, self.clinic_code, self.signer) if payload is None
                 else seal_payload(payload, record, self.clinic_code, self.signer))
        if (problem := size_problem(len(value), self.max_visit_bytes)) is not None:
            raise VisitTooLarge(str(record.get("visit_code")), [problem])
        return await self._producer.send(self.topic, value, key=key.encode())

    async def publish_raw(self, key: bytes | None, value: bytes) -> asyncio.Future:
        """Queue bytes as they are; for re-sending stored messages and for fault tests."""
        return await self._producer.send(self.topic, value, key=key)

    async def publish_all(self, events: Iterable[dict[str, Any]], *, validate: bool = True) -> int:
        """Publish many visits and wait until the broker acknowledged every one; return how many."""
        pending = [await self.publish(event, validate=validate) for event in events]
        await asyncio.gather(*pending)
        return len(pending)
