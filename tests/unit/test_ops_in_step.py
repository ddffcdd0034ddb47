"""The on-call pieces agree: each alert has its tests and its runbook, and the local and compose setups match."""

import re

import yaml

from healthbook.config import PROJECT_ROOT

OPS = PROJECT_ROOT / "ops"
RULES = [rule for group in yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())["groups"]
         for rule in group["rules"]]
RUNBOOK = (PROJECT_ROOT / "docs" / "operations.md").read_text()
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def _config(name: str) -> dict:
    return yaml.safe_load((OPS / "prometheus" / name).read_text())


def test_every_alert_has_a_runbook_section_its_annotation_points_at():
    for rule in RULES:
        name = rule["alert"]
        assert f"\n## {name}\n" in RUNBOOK, name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert f"[{name}](#{name.lower()})" in RUNBOOK, f"{name} is missing from the runbook's table"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_every_alert_is_seen_firing_in_the_rule_tests():
    tests = yaml.safe_load((OPS / "prometheus" / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == {rule["alert"] for rule in RULES}


def test_the_local_and_compose_prometheus_scrape_the_same_services_with_the_same_rules():
    local, compose = _config("prometheus.yml"), _config("prometheus-compose.yml")
    assert local["rule_files"] == compose["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in local["scrape_configs"]}
    in_compose = {job["job_name"]: job["static_configs"][0]["targets"] for job in compose["scrape_configs"]}
    assert set(in_compose) == set(jobs) - {"healthbook-supervisor"}  # compose restarts its one worker itself
    for job, targets in in_compose.items():
        assert [t.split(":")[1] for t in targets] == [t.split(":")[1] for t in jobs[job]], job
    assert any(rule_job in str(r["expr"]) for r in RULES for rule_job in jobs)


def test_compose_runs_the_prometheus_alertmanager_and_grafana_of_ops():
    services = COMPOSE["services"]
    mounts = {name: [str(v) for v in service.get("volumes", [])] for name, service in services.items()}
    assert "./ops/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts["prometheus"]
    assert "./ops/prometheus/prometheus-compose.yml:/etc/prometheus/prometheus.yml:ro" in mounts["prometheus"]
    assert services["prometheus"]["image"].endswith(":v2.42.0")  # Debian's, which `make observe` runs
    provisioning = yaml.safe_load((OPS / "grafana" / "provisioning" / "dashboards" / "healthbook.yml").read_text())
    folder = provisioning["providers"][0]["options"]["path"]
    assert f"./ops/grafana/dashboards:{folder}:ro" in mounts["grafana"]
    assert "GF_SECURITY_ADMIN_PASSWORD" in services["grafana"]["environment"]
    am_port = re.search(r"--web.listen-address=:(\d+)", " ".join(services["alertmanager"]["command"])).group(1)
    local_am = _config("prometheus.yml")["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    stack = (PROJECT_ROOT / "stack" / "stack.sh").read_text()
    assert local_am == f"127.0.0.1:{am_port}" and f'ALERTMANAGER_PORT:-{am_port}' in stack
    for service in ("prometheus", "alertmanager", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in services[service]["ports"]), service
