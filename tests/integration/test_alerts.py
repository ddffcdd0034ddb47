"""The alerts as an operator meets them: Debian's Prometheus scraping the running services with ops/prometheus.

One test watches HealthbookWorkerDown fire when a running worker is stopped; the other holds every metric
an alert rule or the Grafana dashboard reads to the names the running worker, query consumer and
supervisor export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from commands.processes import ServiceProcess
from healthbook.config import PROJECT_ROOT
from schemas.envelope import Signer, seal_visit
from tests.factories import visit
from tests.integration.conftest import LOGS, deployment_with_backlog, free_port, new_citizen, next_sequence, wait_until

pytestmark = pytest.mark.integration
OPS = PROJECT_ROOT / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "healthbook.json"


def _rules_firing_at_once(tmp: Path) -> Path:
    """alerts.yml with every `for` cut to one second, so the test waits seconds, not minutes."""
    rules = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = tmp / "alerts.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


class Observer:
    """Debian's prometheus and prometheus-alertmanager on loopback ports of their own, as `make observe` runs them.

    Prometheus scrapes the given targets every second with the project's rules and alerts the project's
    Alertmanager configuration (ops/alertmanager), where the operator's page would start.
    """

    def __init__(self, tmp: Path, jobs: dict[str, str]) -> None:
        for tool in ("prometheus", "prometheus-alertmanager"):
            assert shutil.which(tool), f"{tool} is missing: `make test` installs it (stack/stack.sh observe-install)"
        self.port, self.alertmanager_port = free_port(), free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(_rules_firing_at_once(tmp))],
                  "alerting": {"alertmanagers": [{"static_configs": [
                      {"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]},
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                     for job, target in jobs.items()]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (LOGS / "prometheus-test.log").open("w")
        self.processes = [
            subprocess.Popen(["prometheus-alertmanager", f"--config.file={OPS / 'alertmanager' / 'alertmanager.yml'}",
                              f"--storage.path={tmp / 'alertmanager'}", "--cluster.listen-address=",
                              f"--web.listen-address=127.0.0.1:{self.alertmanager_port}"],
                             stdout=self.log, stderr=subprocess.STDOUT),
            subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                              f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                             stdout=self.log, stderr=subprocess.STDOUT)]

    async def _get(self, url: str, **params: str) -> Any:
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    url, params=params, timeout=aiohttp.ClientTimeout(total=5)) as reply:
                return json.loads(await reply.text()) if reply.status == 200 else None
        except aiohttp.ClientError:
            return None  # not listening yet

    async def get(self, path: str, **params: str) -> Any:
        found = await self._get(f"http://127.0.0.1:{self.port}{path}", **params)
        return found["data"] if found else {"result": [], "alerts": []}

    async def alert(self, name: str) -> str | None:
        """The state of one alert in Prometheus (pending, firing), or None when it is not active."""
        alerts = (await self.get("/api/v1/alerts"))["alerts"]
        return next((a["state"] for a in alerts if a["labels"]["alertname"] == name), None)

    async def received(self, name: str) -> bool:
        """Whether Alertmanager holds the alert, active, for its receivers."""
        alerts = await self._get(f"http://127.0.0.1:{self.alertmanager_port}/api/v2/alerts") or []
        return any(a["labels"]["alertname"] == name and a["status"]["state"] == "active" for a in alerts)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(30)
        self.log.close()


async def _scraped(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as reply:
        return await reply.text()


async def test_the_worker_down_alert_fires_and_reaches_alertmanager_when_a_running_worker_stops(settings, tmp_path):
    own = await deployment_with_backlog(settings, "alerts", 41, 5, 20)
    own = own.model_copy(update={"worker_metrics_port": free_port()})
    worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}-alerts.log").start()
    prometheus = Observer(tmp_path, {"healthbook-worker": f"127.0.0.1:{own.worker_metrics_port}"})
    try:
        async def scraped_up() -> bool:
            found = await prometheus.get("/api/v1/query", query='healthbook_events_total{outcome="consumed"}')
            return bool(found["result"]) and float(found["result"][0]["value"][1]) == 20

        await wait_until(scraped_up, "Prometheus to scrape the worker's 20 consumed visits", timeout=120,
                         process=worker)
        async def quiet() -> bool:  # it fired while the worker was starting, before its first answer
            return await prometheus.alert("HealthbookWorkerDown") is None

        await wait_until(quiet, "HealthbookWorkerDown to resolve while the worker answers", timeout=30, process=worker)
        worker.stop()

        async def firing() -> bool:
            return await prometheus.alert("HealthbookWorkerDown") == "firing"

        await wait_until(firing, "HealthbookWorkerDown to fire once the worker stopped", timeout=60)
        await wait_until(lambda: prometheus.received("HealthbookWorkerDown"),
                         "Alertmanager to receive HealthbookWorkerDown for the operator on call", timeout=60)
        assert await prometheus.alert("HealthbookAnalyticsSilent") is None  # 20 visits, each sent to analytics
    finally:
        worker.stop()
        prometheus.stop()


def _used_metrics() -> Iterator[tuple[str, str]]:
    """(where, metric name) for every metric an alert rule or a dashboard panel reads."""
    expressions = [(f"alert {rule['alert']}", rule["expr"])
                   for group in yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())["groups"]
                   for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    expressions += [(f"panel '{panel['title']}'", target["expr"])
                    for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for where, expression in expressions:
        for name in re.findall(r"\b((?:healthbook|process)_[a-z0-9_]+)\b", expression):
            yield where, name


def _exported(scrape: str) -> set[str]:
    """Every series name a scrape can hold: each family with the suffixes of its type."""
    suffixes = {"counter": ("", "_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",), "summary": ("_count", "_sum", "")}
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", scrape, re.MULTILINE):
        names.update(family + suffix for suffix in suffixes.get(kind, ("",)))
    return names


async def test_a_dead_letter_is_counted_by_clinic_only_for_a_registered_clinic_and_expiries_are_shown(
        clinics, settings):
    """As the operator's Prometheus reads them: a clinic code from a message is a label only once registered.

    A message may name any clinic; were each code a label, one sender could flood Prometheus with series.
    """
    person = new_citizen()
    stranger = visit(person=person, facility="56987", sequence=next_sequence())
    forged = visit(person=person, sequence=next_sequence())
    async with clinics.publisher() as pub:
        key = person.personal_id.encode()
        await (await pub.publish_raw(key, seal_visit(stranger, "56987", Signer.generate("k1"))))
        await (await pub.publish_raw(key, seal_visit(forged, "79001", Signer("k1", Signer.generate("x").private_key))))
    await clinics.barrier(person)
    async with aiohttp.ClientSession() as session:
        async def both_counted_and_expiries_shown() -> str:
            scrape = await _scraped(session, settings.worker_metrics_port)
            wanted = ('healthbook_dead_letters_total{clinic="unregistered",reason="unknown_clinic"}',
                      'healthbook_dead_letters_total{clinic="79001",reason="bad_signature"}',
                      'healthbook_trust_expiry_timestamp_seconds{kind="clinic_certificate",name="79001/k1"}',
                      'healthbook_trust_expiry_timestamp_seconds{kind="revocation_list",')
            missing[:] = [w for w in wanted if w not in scrape]
            return "" if missing else scrape

        missing: list[str] = []
        scrape = await wait_until(both_counted_and_expiries_shown, "the worker's scrape to show both dead letters "
                                  "and every expiry", timeout=90, process=clinics.worker)
        assert not missing
    assert "56987" not in scrape


async def test_every_metric_an_alert_or_the_dashboard_reads_is_one_the_services_export(
        settings, worker, identity, tmp_path):
    own = await deployment_with_backlog(settings, "scrape", 43, 5, 10)
    own = own.model_copy(update={"supervisor_metrics_port": free_port()})
    supervisor = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}-scrape.log", ("--processes", "2")).start()
    release = ServiceProcess("analytics", own.model_copy(update={"analytics_metrics_port": free_port()}),
                             LOGS / f"{own.worker_app_id}-release.log", ("release",)).start()
    try:
        async with aiohttp.ClientSession() as session:
            exported: set[str] = set()
            # each service serves its metrics once it is connected: the query consumer may have just started
            for port, what, process in ((settings.worker_metrics_port, "the worker", worker),
                                        (settings.query_metrics_port, "the query consumer", identity.process),
                                        (own.supervisor_metrics_port, "the supervisor", supervisor),
                                        (release.settings.analytics_metrics_port, "the release stage", release)):
                async def scraped(port: int = port) -> str:
                    try:
                        return await _scraped(session, port)
                    except aiohttp.ClientError:
                        return ""

                exported |= _exported(await wait_until(scraped, f"{what} to serve its metrics", timeout=60,
                                                       process=process))
    finally:
        release.stop()
        supervisor.stop(60)
    missing = sorted({f"{where}: {name}" for where, name in _used_metrics() if name not in exported})
    assert not missing, "read but exported by no service: " + "; ".join(missing)
    assert {"healthbook_request_seconds_bucket", "healthbook_trust_expiry_timestamp_seconds",
            "healthbook_dead_letters_total", "healthbook_worker_restarts_total"} <= exported


def test_every_dashboard_query_is_promql_that_prometheus_parses(tmp_path):
    """Each panel's query, checked by promtool as a recording rule (so a typo fails here, not on a screen)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"healthbook:panel_{n}", "expr": query}
                                                        for n, query in enumerate(queries)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "dashboard.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
