"""A stand-in for the national identity platform (VNeID), for the demo and tests only: it signs confirmations.

It never changes what the query consumer trusts: the demo and the test harness, acting as the
deployer, trust its public key explicitly (`trust_identity_key`); `healthbook request` only signs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.replies import Reply, read_reply
from healthbook import kafka
from healthbook.config import Settings
from healthbook.secret_files import write_owner_only
from schemas import catalogue, wire
from schemas.envelope import Signer, now_millis, seal_request

log = logging.getLogger(__name__)
KEY_ID = "vneid-demo-1"
DEMO_PASSCODE = "123456"  # the stand-in's passcode for every demo account
UNCLAIMED_REPLIES = 10_000  # replies on the topic that nobody here waits for, kept in case someone will


class ReplyTimeout(TimeoutError):
    """No reply arrived for a request in time: is the query consumer running?"""


def ensure_identity_key(settings: Settings) -> Signer:
    """Load the stand-in's signing key, creating it on first use (it is not trusted until a deployer says so)."""
    private_path = settings.key_dir / "identity-platform" / f"{KEY_ID}.pem"
    if private_path.exists():
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        signer = Signer(KEY_ID, key)
    else:
        signer = Signer.generate(KEY_ID)
        private_path.parent.mkdir(parents=True, exist_ok=True)
        write_owner_only(private_path, signer.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return signer


def trust_identity_key(path: Path, signer: Signer) -> None:
    """Add a signer's public key to the query consumer's trusted-keys file (the deployer's act, done by the demo)."""
    trusted = json.loads(path.read_text()) if path.exists() else {}
    trusted[signer.key_id] = base64.b64encode(signer.public_key).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trusted, indent=2))


def confirmation(personal_id: str, year: int, *, identity_level: int = 2, consent_confirmed: bool = True,
                 request_id: str | None = None, detail: tuple[str, str] | None = None, answer_format: str = "book",
                 every_year: bool = False) -> dict[str, Any]:
    """An unsigned integration request as the identity app would build it (answer_format "fhir" for a Bundle)."""
    return {
        "request_id": request_id or str(uuid.uuid4()),
        "personal_id": personal_id,
        "year": year,
        "identity_level": identity_level,
        "consent_confirmed": consent_confirmed,
        "requested_at": now_millis(),
        "detail": None if detail is None else {"facility_code": detail[0], "visit_code": detail[1]},
        "format": answer_format,
        "every_year": every_year,
    }


class IdentityPlatform:
    """Sends signed integration requests and waits for the replies keyed by request id."""

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.settings = settings
        self.signer = signer
        broker = kafka.Broker.of(settings)  # the stand-in logs in as the identity platform
        self._producer = kafka.producer(broker, "identity-standin")
        self._consumer = kafka.consumer(broker, "identity-standin", settings.topics.integration_replies)
        self._replies: dict[str, Reply] = {}

    async def __aenter__(self) -> IdentityPlatform:
        await self._producer.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._producer.stop()

    async def send(self, request: dict[str, Any], *, sign: bool = True) -> str:
        """Publish a request, signed unless told otherwise; return its request id."""
        if sign:
            raw = seal_request(request, self.signer)
        else:
            raw = wire.encode(catalogue.INTEGRATION_REQUEST, dict(request, key_id=self.signer.key_id, signature=b""))
        await self._producer.send_and_wait(self.settings.topics.integration_requests, raw,
                                           key=request["personal_id"].encode())
        return request["request_id"]

    async def send_raw(self, key: bytes, raw: bytes) -> None:
        """Publish bytes as they are, for refusal tests."""
        await self._producer.send_and_wait(self.settings.topics.integration_requests, raw, key=key)

    async def reply(self, request_id: str, timeout: float = 30.0) -> Reply:
        """Wait for the reply to a request."""
        async def wait() -> Reply:
            while request_id not in self._replies:
                batches = await self._consumer.getmany(timeout_ms=200)
                for messages in batches.values():
                    for message in messages:
                        reply = read_reply(message.value)
                        if reply is None:
                            log.warning("skipped an unreadable reply at %s[%d]@%d", message.topic,
                                        message.partition, message.offset)
                            continue
                        self._replies[reply.request_id] = reply
                        if len(self._replies) > UNCLAIMED_REPLIES:  # others' replies: keep only the newest
                            del self._replies[next(iter(self._replies))]
            return self._replies.pop(request_id)
        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise ReplyTimeout(f"no reply to request {request_id} within {timeout:.0f}s; "
                               "is the query consumer running ('healthbook query-consumer')?") from None

    async def ask(self, request: dict[str, Any], timeout: float = 30.0, *, sign: bool = True) -> Reply:
        """Send a request and wait for its reply."""
        return await self.reply(await self.send(request, sign=sign), timeout)
