"""Settings of every healthbook process, read from HEALTHBOOK_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.registry_trust import TrustAnchors
from domain.validation import SigningWindow
from schemas.topics import TopicNames

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Where the stack is and how the pipeline is tuned; defaults match stack/stack.sh."""

    model_config = SettingsConfigDict(env_prefix="HEALTHBOOK_", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "SASL_SSL"  # PLAINTEXT only for a broker you secure another way
    kafka_user: str = ""  # the SCRAM principal this process logs in as; each command names its own by default
    kafka_credentials_dir: Path = PROJECT_ROOT / ".local" / "kafka" / "credentials"
    kafka_ca_file: Path = PROJECT_ROOT / ".local" / "kafka" / "tls" / "ca.crt"
    database_url: str = "postgresql://healthbook:healthbook@127.0.0.1:5432/healthbook"
    topic_prefix: str = ""
    worker_id: str = "healthbook-worker"
    query_group: str = "healthbook-query"
    visit_partitions: int = 4
    batch_size: int = 500
    batch_within_seconds: float = 0.2
    key_dir: Path = PROJECT_ROOT / ".local" / "keys"
    identity_keys_file: Path = PROJECT_ROOT / ".local" / "keys" / "identity-platform.json"
    ingest_ledger: Path = PROJECT_ROOT / ".local" / "ingest-ledger.sqlite"
    xml_signature_max_mb: int = 200
    request_window_seconds: int = 300
    signed_at_max_delay_seconds: int = 3600
    signed_at_max_ahead_seconds: int = 300
    sensitive_diagnoses: str = "A15-A19,B20-B24,Z21"
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9108
    query_metrics_port: int = 9109
    log_format: str = "json"
    trust_anchors_file: Path = PROJECT_ROOT / ".local" / "pki" / "ca.crt"
    revocation_list_file: Path = PROJECT_ROOT / ".local" / "pki" / "ca.crl"
    registry_key_dir: Path = PROJECT_ROOT / ".local" / "pki"  # only the key and insurance registries' tools
    pseudonym_key_file: Path = PROJECT_ROOT / ".local" / "keys" / "pseudonym.key"

    @property
    def signing_window(self) -> SigningWindow:
        """How far a visit's signed_at may lie from the broker's append time."""
        return SigningWindow(self.signed_at_max_delay_seconds * 1000, self.signed_at_max_ahead_seconds * 1000)

    def trust_anchors(self) -> TrustAnchors:
        """The CAs this deployment trusts for clinic and registry certificates, read now."""
        return TrustAnchors.load(self.trust_anchors_file, self.revocation_list_file)

    @property
    def topics(self) -> TopicNames:
        """The topic names, with the configured prefix."""
        return TopicNames(self.topic_prefix)
