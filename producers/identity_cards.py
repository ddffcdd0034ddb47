"""The insurance registry's feed of which citizen a BHYT card belongs to, onto the compacted identity topic."""

from __future__ import annotations

from healthbook import kafka
from producers.registry_signing import RegistrySigner
from schemas import catalogue, wire
from schemas.envelope import now_millis


async def publish_identity_cards(broker: kafka.Broker, topic: str, mappings: list[tuple[str, str]],
                                 registry: RegistrySigner) -> None:
    """Write card number -> personal ID mappings, signed by the insurance registry, and wait for the broker."""
    records = [registry.identity_card({"card_number": card, "personal_id": personal_id, "updated_at": now_millis()})
               for card, personal_id in mappings]
    await kafka.send_all(broker, "identity-cards", topic,
                         [(r["card_number"].encode(), wire.encode(catalogue.IDENTITY_CARD, r)) for r in records])
