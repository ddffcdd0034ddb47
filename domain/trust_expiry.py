"""When each thing the worker trusts stops counting: CA certificates, their revocation lists, clinic certificates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from domain.keyring import Keyring
from domain.registry_trust import TrustAnchors


@dataclass(frozen=True)
class Expiry:
    """One trusted thing and the moment it stops counting."""

    kind: str  # ca_certificate, registry_certificate, revocation_list or clinic_certificate
    name: str  # the CA's subject, or clinic code / key id
    at: datetime


def trust_expiries(trust: TrustAnchors, keyring: Keyring) -> list[Expiry]:
    """Every expiry an operator must act on before it passes; a revoked clinic key counts for nothing already.

    When a clinic's certificate expires, each visit it signs after is dead-lettered; when a CA's revocation
    list does, every certificate of that CA counts for nothing until a current list is in place.
    """
    trust.lists.reload_if_changed()
    found = [Expiry("ca_certificate", ca.subject.rfc4514_string(), ca.not_valid_after_utc)
             for ca in trust.authorities]
    found += [Expiry("registry_certificate", anchor.subject.rfc4514_string(), anchor.not_valid_after_utc)
              for anchor in trust.registries]
    found += [Expiry("revocation_list", lists.issuer.rfc4514_string(), lists.next_update)
              for lists in trust.lists.by_issuer.values() if lists.next_update is not None]
    found += [Expiry("clinic_certificate", f"{entry.clinic_code}/{entry.key_id}",
                     datetime.fromtimestamp(entry.valid_until_ms / 1000, UTC))
              for entry in keyring.entries() if entry.revoked_at_ms is None and entry.valid_until_ms is not None]
    return found
