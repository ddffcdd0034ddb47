"""Seeing it run: JSON log lines without personal data, Prometheus metrics and a health endpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Only these attributes of a log record are copied into the JSON line: identifiers of events and
# their place in Kafka, never content. Personal IDs, names and record content are never passed.
CONTEXT_FIELDS = ("event_id", "clinic", "topic", "partition", "offset", "offsets", "reason", "request_id", "worker_id")

EVENTS = Counter("healthbook_events_total", "Visit messages by outcome", ["outcome"])
BATCH_SIZE = Histogram("healthbook_batch_messages", "Messages per processed batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000))
BATCH_SECONDS = Histogram("healthbook_batch_seconds", "Time to validate, project and commit one batch")
EVENT_AGE = Histogram("healthbook_event_age_seconds", "From the message's Kafka timestamp to its batch's commit",
                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
LAG = Gauge("healthbook_consumer_lag_messages", "Messages published but not yet applied", ["partition"])
IGNORED = Counter("healthbook_ignored_registry_records_total",
                  "Registry records ignored because their signature or certificate cannot be verified",
                  ["topic", "kind"])
ANALYTICS_WITHHELD = Counter("healthbook_analytics_withheld_total",
                             "Accepted visits kept off the analytics topic as sensitive")
REQUESTS = Counter("healthbook_integration_requests_total", "Integration requests by outcome", ["outcome"])
UNREADABLE = Counter("healthbook_unreadable_records_total", "Registry and topic records skipped as unreadable",
                     ["topic", "kind"])
# What an operator on call is woken by (ops/prometheus/alerts.yml; docs/operations.md says what to do).
REQUEST_SECONDS = Histogram("healthbook_request_seconds",
                            "A citizen's wait: from the request's append to the requests topic to its reply sent",
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
DEAD_LETTERS = Counter("healthbook_dead_letters_total",
                       "Visit messages dead-lettered, by reason and registered clinic ('unregistered' for the rest)",
                       ["reason", "clinic"])
ANALYTICS_SENT = Counter("healthbook_analytics_records_total", "De-identified records the broker acknowledged")
RELEASED = Counter("healthbook_analytics_released_total",
                   "Visits the release stage gave a subscriber, as its policy gives them or widened at window close",
                   ["subscriber", "form"])
SUPPRESSED = Counter("healthbook_analytics_suppressed_total",
                     "Visits suppressed for a subscriber: their cell held fewer than k people even widened",
                     ["subscriber"])
SET_ASIDE = Counter("healthbook_analytics_set_aside_total",
                    "Records of visits.deidentified the release stage could not use (kept in analytics_unreadable)")
RELEASE_LAG = Gauge("healthbook_analytics_release_lag_messages",
                    "Records on visits.deidentified the release stage has not read yet")
TRUST_EXPIRY = Gauge("healthbook_trust_expiry_timestamp_seconds",
                     "When each trusted CA certificate, each CA's revocation list and each registered clinic "
                     "certificate stops counting (Unix time)", ["kind", "name"])
PARTITION_HELD = Gauge("healthbook_batch_held", "1 while the worker holds a batch for an unreachable PostgreSQL")
SUSPECT_BATCHES = Gauge("healthbook_suspect_batches",
                        "Batches the worker failed on with a bug, isolated message by message until written")
RESTARTS = Counter("healthbook_worker_restarts_total",
                   "Worker processes the supervisor started again after they exited", ["worker"])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the event's coordinates."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def json_logging_config(level: str = "INFO") -> dict[str, Any]:
    """A logging.config.dictConfig that writes every log line as JSON to stderr, and nothing else."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"level": level, "handlers": ["default"]},
    }


def json_handler() -> logging.Handler:
    """A stderr handler writing JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    return handler


def use_json_logs(level: int = logging.INFO) -> None:
    """Make the root logger write JSON lines only."""
    root = logging.getLogger()
    root.handlers = [json_handler()]
    root.setLevel(level)


async def serve(port: int, healthy: Callable[[], tuple[bool, dict[str, Any]]], name: str,
                host: str = "127.0.0.1") -> web.AppRunner | None:
    """Serve /metrics and /health on host:port (port 0 turns it off); a taken port is logged, not fatal."""
    if not port:
        return None

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_: web.Request) -> web.Response:
        ok, details = healthy()
        return web.json_response({"service": name, "healthy": ok, **details}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        logging.getLogger(__name__).error("cannot serve metrics and health on port %d: %s", port, exc)
        await runner.cleanup()
        return None
    logging.getLogger(__name__).info("metrics and health on http://%s:%d/", host, port)
    return runner
