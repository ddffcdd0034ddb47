"""What the worker shows an operator of the expiries that stop visits: each CA, each list, each clinic certificate."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from commands.local_ca import CRL_DAYS, LocalCA
from domain.keyring import ClinicKey, Keyring
from domain.trust_expiry import trust_expiries
from schemas import catalogue, wire
from schemas.envelope import Signer


def _apply(ca: LocalCA, keyring: Keyring, entry: ClinicKey) -> None:
    """As the worker takes a registry record: signed by the key registry, verified against the anchors."""
    signed = ca.key_registry().clinic_key(entry.to_record())
    keyring.apply(entry.registry_key, wire.encode(catalogue.CLINIC_KEY, signed))


def test_every_certificate_and_list_that_can_stop_visits_is_listed_with_when_it_stops(tmp_path):
    ca = LocalCA.open(tmp_path / "pki")
    trust = ca.trust_anchors()
    keyring = Keyring(trust)
    _apply(ca, keyring, ca.entry("79001", Signer.generate("k1"), days=20))
    revoked = ca.entry("79002", Signer.generate("k1"), days=5)
    _apply(ca, keyring, replace(revoked, revoked_at_ms=revoked.registered_at_ms))  # counts for nothing already
    assert keyring.get("79002", "k1") is not None
    found = {(e.kind, e.name): e.at for e in trust_expiries(trust, keyring)}
    now = datetime.now(UTC)
    clinic = found.pop(("clinic_certificate", "79001/k1"))
    assert timedelta(days=19) < clinic - now <= timedelta(days=20)
    kinds = sorted(kind for kind, _ in found)
    assert kinds == ["ca_certificate", "registry_certificate", "revocation_list", "revocation_list"], found
    for (kind, name), at in found.items():
        assert name.startswith("CN=") or "=" in name, name
        if kind == "revocation_list":
            assert timedelta(days=CRL_DAYS - 1) < at - now <= timedelta(days=CRL_DAYS)
        else:
            assert at - now > timedelta(days=365)
