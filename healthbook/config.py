"""Settings of every healthbook process, read from HEALTHBOOK_* environment variables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.consent import RequestPolicy
from domain.registry_trust import TrustAnchors
from domain.sensitive_diagnoses import SensitiveDiagnoses
from domain.sensitive_visit import SensitivePolicy, parse_list
from domain.validation import SigningWindow
from schemas.topics import DEDUP_TABLE, DEFAULT_MAX_VISIT_BYTES, Replication, TopicNames

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "HEALTHBOOK_"
LOCAL = PROJECT_ROOT / ".local"


class BadSetting(ValueError):
    """A HEALTHBOOK_* setting whose value cannot be read; the message names it and shows the form it takes."""


def _setting(default: Any, meaning: str, *, secret: bool = False) -> Any:
    return Field(default, description=meaning, json_schema_extra={"secret": secret} if secret else None)


class Settings(BaseSettings):
    """Where the stack is and how the pipeline is tuned; defaults match stack/stack.sh."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    kafka_bootstrap: str = _setting(
        "", "the brokers' host:port list, comma-separated (empty: the local stack's, 127.0.0.1:9092 and with three "
            "brokers also :9192 and :9292)")
    brokers: int = _setting(
        1, "how many brokers the cluster has: 1, or 3 and more for replicas (each partition on three brokers, a "
           "write acknowledged by two, no unclean leader election); the local stack starts 1 or 3")
    kafka_security_protocol: str = _setting(
        "SASL_SSL", "SASL_SSL (TLS and SCRAM-SHA-512); PLAINTEXT only for a broker secured another way")
    kafka_user: str = _setting("", "the SCRAM principal this process logs in as; each command sets its role's")
    kafka_credentials_dir: Path = _setting(
        LOCAL / "kafka" / "credentials", "a folder of password files, one per principal, named after it")
    kafka_ca_file: Path = _setting(LOCAL / "kafka" / "tls" / "ca.crt", "the CA that signed the broker's certificate")
    database_url: str = _setting("postgresql://healthbook:healthbook@127.0.0.1:5432/healthbook?sslmode=disable",
                                 "the PostgreSQL database of the health book (on loopback without TLS, which "
                                 "cost the query consumer a third of its time there; across hosts use "
                                 "sslmode=verify-full)", secret=True)
    topic_prefix: str = _setting(
        "", "put before every topic name, and before the worker id and query group when they are not set: "
            "one prefix isolates a deployment on a shared broker")
    worker_id: str = _setting(
        "", "the faust app id: names the worker's consumer group and its changelog and assignor topics "
            "(empty: `<prefix>healthbook-worker`)")
    query_group: str = _setting("", "the query consumer's consumer group (empty: `<prefix>healthbook-query`)")
    visit_partitions: int = _setting(4, "partitions of `visits`, the de-identified topic and the dedup changelog")
    max_visit_bytes: int = _setting(
        DEFAULT_MAX_VISIT_BYTES, "the largest signed visit (the framed `SignedVisit` value) the topics and "
                                 "producers accept; larger visits are refused before sending")
    worker_data_dir: Path = _setting(
        LOCAL / "worker", "faust's folder for the worker, one subfolder per worker id (tables are in memory and "
                          "rebuilt from their changelog; it holds faust's bookkeeping only)")
    batch_size: int = _setting(500, "the most visits the worker takes in one batch")
    batch_within_seconds: float = _setting(0.05, "how long the worker waits to fill a batch")
    key_dir: Path = _setting(LOCAL / "keys", "clinic private keys on a clinic's machine, `<clinic>/<key id>.pem`")
    identity_keys_file: Path = _setting(
        LOCAL / "keys" / "identity-platform.json",
        "the identity-platform keys the query consumer trusts: JSON `{key id: base64 of the raw 32-byte "
        "Ed25519 public key}`")
    ingest_ledger: Path = _setting(LOCAL / "ingest-ledger.sqlite", "the clinic-side record of what ingest published")
    xml_signature_max_mb: int = _setting(200, "the largest signed dossier verified (held in memory), in MiB")
    request_window_seconds: int = _setting(300, "how far requested_at may lie from the query consumer's clock")
    signed_at_max_delay_seconds: int = _setting(3600, "how long before the broker's append time a visit may be signed")
    signed_at_max_ahead_seconds: int = _setting(300, "how far after the broker's append time signed_at may lie")
    sensitive_diagnoses: str = _setting(
        "A15-A19,B20-B24,Z21", "ICD-10 categories and ranges that make a visit sensitive, wherever they are written")
    sensitive_medicines: str = _setting(
        "J05AR,RHZE,HRZE", "drug codes (XML2 MA_THUOC) that make a visit sensitive: a part of the code starting "
        "with one (ATC J05AR antiretrovirals, TB regimens)")
    sensitive_services: str = _setting(
        "24.0117,24.0118,24.0119,24.0263", "service and test codes (XML3/XML4 MA_DICH_VU, MA_CHI_SO) that make a "
        "visit sensitive, by prefix; the defaults are the synthetic data's HIV and TB tests: set the national codes")
    sensitive_words: str = _setting(
        "HIV,AIDS,ARV,OPC,PrEP,CD4,tải lượng virus,lao phổi,bệnh lao,kháng lao,điều trị lao,nhiễm lao,lao hạch,"
        "lao màng,lao kháng thuốc,DTRI LAO,Xpert,MTB,AFB,tenofovir,lamivudine,dolutegravir,efavirenz,zidovudine,"
        "nevirapine,isoniazid,rifampicin,pyrazinamide,ethambutol",
        "words or phrases (any case) that make a visit sensitive wherever they are written, field names included")
    page_hosts: str = _setting("127.0.0.1,localhost",
                               "the Host names the citizen page answers to (comma-separated); any other is refused")
    metrics_host: str = _setting("127.0.0.1", "where /metrics and /health listen")
    worker_metrics_port: int = _setting(9108, "the worker's metrics port (0: off)")
    query_metrics_port: int = _setting(9109, "the query consumer's metrics port (0: off)")
    supervisor_metrics_port: int = _setting(9107, "the metrics port of `healthbook worker --processes N`'s supervisor "
                                                  "(restarts; 0: off)")
    log_format: str = _setting("json", "json (one object per line) or text")
    trust_anchors_file: Path = _setting(LOCAL / "pki" / "ca.crt",
                                        "the clinic CAs' certificates (PEM): they vouch for clinic keys, never for a "
                                        "registry")
    registry_anchors_file: Path = _setting(
        LOCAL / "pki" / "registry-ca.crt", "the registries' own trust anchors (PEM): their CA's certificate, or the "
                                           "key and insurance registries' certificates pinned as they are")
    revocation_lists: str = _setting(
        f"{LOCAL / 'pki' / 'ca.crl'},{LOCAL / 'pki' / 'registry-ca.crl'}",
        "revocation list files (PEM, comma-separated, each may hold several CRLs): every trusted CA needs a current "
        "one, verified against it, or its certificates count for nothing; re-read within seconds of a change")
    legacy_signatures_until: str = _setting(
        "2027-03-01T00:00:00Z", "until when records signed in a retired signing form (clinic-key v2, request v1-v3) "
                                "are still accepted (ISO time; empty: never)")
    registry_max_ahead_seconds: int = _setting(
        300, "how far ahead of this clock a clinic-key or identity-card record may be dated; later ones are refused")
    registry_key_dir: Path = _setting(LOCAL / "pki",
                                      "the key and insurance registries' signing keys (their tools only)")
    pseudonym_key_file: Path = _setting(LOCAL / "keys" / "pseudonym.key",
                                        "the secret behind analytics pseudonyms; made on first start, keep it")
    analytics_policy_dir: Path = _setting(PROJECT_ROOT / "ops" / "analytics",
                                          "one TOML policy per analytics subscriber: what it receives, its k")
    analytics_release_key_file: Path = _setting(
        LOCAL / "keys" / "analytics-release.key", "the release stage's secret behind each subscriber's pseudonyms "
                                                  "(keyed per subscriber and year from it); made on first start")
    analytics_metrics_port: int = _setting(9110, "the analytics release stage's metrics port (0: off)")
    analytics_grace_days: int = _setting(
        10, "days after an admission month ends before its release window closes and small cells are widened")

    @property
    def bootstrap(self) -> str:
        """Where clients first reach the cluster: HEALTHBOOK_KAFKA_BOOTSTRAP, or the local stack's nodes."""
        return self.kafka_bootstrap or local_bootstrap(self.brokers)

    @property
    def replication(self) -> Replication:
        """How many copies of each partition the cluster keeps, and how many must take a write."""
        if self.brokers < 1:
            raise BadSetting(f"HEALTHBOOK_BROKERS={self.brokers}: a cluster has at least one broker")
        return Replication.for_brokers(self.brokers)

    @property
    def worker_app_id(self) -> str:
        """The worker's faust app id: HEALTHBOOK_WORKER_ID, or derived from the topic prefix."""
        return self.worker_id or f"{self.topic_prefix}healthbook-worker"

    @property
    def dedup_changelog(self) -> str:
        """The faust changelog topic of the deduplication table."""
        return f"{self.worker_app_id}-{DEDUP_TABLE}-changelog"

    @property
    def query_group_id(self) -> str:
        """The query consumer's group: HEALTHBOOK_QUERY_GROUP, or derived from the topic prefix."""
        return self.query_group or f"{self.topic_prefix}healthbook-query"

    @property
    def signing_window(self) -> SigningWindow:
        """How far a visit's signed_at may lie from the broker's append time."""
        return SigningWindow(self.signed_at_max_delay_seconds * 1000, self.signed_at_max_ahead_seconds * 1000)

    @property
    def sensitive(self) -> SensitivePolicy:
        """What makes a visit sensitive: sealed in every list and kept off analytics."""
        return SensitivePolicy(
            SensitiveDiagnoses.parse(self.sensitive_diagnoses),
            parse_list("HEALTHBOOK_SENSITIVE_MEDICINES", self.sensitive_medicines),
            parse_list("HEALTHBOOK_SENSITIVE_SERVICES", self.sensitive_services),
            parse_list("HEALTHBOOK_SENSITIVE_WORDS", self.sensitive_words))

    def request_policy(self, trusted: dict[str, bytes]) -> RequestPolicy:
        """How integration requests are judged, given the identity-platform keys trusted."""
        return RequestPolicy(trusted, timedelta(seconds=self.request_window_seconds), self.legacy_until)

    def trust_anchors(self) -> TrustAnchors:
        """The clinic CAs and registry anchors this deployment trusts, and their revocation lists, read now."""
        return TrustAnchors.load(self.trust_anchors_file, self.registry_anchors_file,
                                 [Path(part.strip()) for part in self.revocation_lists.split(",") if part.strip()],
                                 legacy_signatures_until=self.legacy_until,
                                 registry_max_ahead=timedelta(seconds=self.registry_max_ahead_seconds))

    @property
    def legacy_until(self) -> datetime | None:
        """When retired signing forms stop counting (HEALTHBOOK_LEGACY_SIGNATURES_UNTIL), None when they never do."""
        if not self.legacy_signatures_until.strip():
            return None
        try:
            when = datetime.fromisoformat(self.legacy_signatures_until.strip())
        except ValueError:
            raise BadSetting(f"HEALTHBOOK_LEGACY_SIGNATURES_UNTIL={self.legacy_signatures_until!r} is not an ISO "
                             "time such as 2027-03-01T00:00:00Z") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    @property
    def topics(self) -> TopicNames:
        """The topic names, with the configured prefix."""
        return TopicNames(self.topic_prefix)

    def effective(self) -> list[tuple[str, str, str]]:
        """Each setting as (environment variable, effective value with secrets masked, where it came from)."""
        derived = {"worker_id": self.worker_app_id, "query_group": self.query_group_id}
        rows = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            source = "set" if name in self.model_fields_set else "default"
            if name in derived and not value:
                value, source = derived[name], "derived from the prefix"
            rows.append((ENV_PREFIX + name.upper(), masked(str(value)) if _is_secret(field) else str(value), source))
        return rows


def local_bootstrap(brokers: int) -> str:
    """The local stack's nodes: stack/stack.sh puts node N on port 9092 + 100*(N-1)."""
    return ",".join(f"127.0.0.1:{9092 + 100 * n}" for n in range(min(max(brokers, 1), 3)))


def _is_secret(field: Any) -> bool:
    return bool(isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret"))


def masked(url: str) -> str:
    """A URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def settings_table() -> str:
    """The README's settings table (name, default, meaning), rendered from Settings so it cannot drift."""
    lines = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = default.relative_to(PROJECT_ROOT) if default.is_relative_to(PROJECT_ROOT) else default
        elif isinstance(default, str):
            default = default.replace(f"{PROJECT_ROOT}/", "")
        shown = str(default)  # defaults are the local stack's, documented anyway; `healthbook config` masks values
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {'`' + shown + '`' if shown else '(empty)'} "
                     f"| {field.description} |")
    return "\n".join(lines)
