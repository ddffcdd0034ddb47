"""docker-compose.yml describes the same stack as stack/ and the settings."""

import re
from pathlib import Path

import yaml

from healthbook.config import PROJECT_ROOT, Settings
from schemas.topics import readme_table

PACKAGES = ("schemas", "domain", "healthbook", "producers", "streams", "consumers", "synthetic", "commands")
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")


def test_compose_kafka_image_is_the_version_the_local_stack_resolves():
    pom = (PROJECT_ROOT / "stack" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    for node in KAFKA_NODES:
        assert COMPOSE["services"][node]["image"] == f"apache/kafka:{version}"


def test_compose_environment_names_real_settings():
    fields = {f"HEALTHBOOK_{name.upper()}" for name in Settings.model_fields}
    for service in ("worker", "query-consumer", "topics"):
        assert set(COMPOSE["services"][service]["environment"]) <= fields


def test_compose_broker_settings_match_the_local_broker():
    script = (PROJECT_ROOT / "stack" / "stack.sh").read_text()
    for node in KAFKA_NODES:
        env = COMPOSE["services"][node]["environment"]
        for key in ("num.partitions", "auto.create.topics.enable", "offsets.topic.num.partitions",
                    "group.initial.rebalance.delay.ms", "log.retention.hours", "unclean.leader.election.enable"):
            local = re.search(rf"^{re.escape(key)}=(.+)$", script, re.M).group(1)
            assert str(env["KAFKA_" + key.upper().replace(".", "_")]) == local, key


def test_compose_runs_the_three_node_cluster_the_local_stack_runs_with_three_brokers():
    entrypoint = (PROJECT_ROOT / "stack" / "compose" / "kafka-entrypoint.sh").read_text()
    assert [COMPOSE["services"][n]["environment"]["HEALTHBOOK_NODE_ID"] for n in KAFKA_NODES] == [1, 2, 3]
    assert "controller.quorum.voters=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093" in entrypoint
    three = Settings(brokers=3).replication
    env = COMPOSE["services"]["kafka-1"]["environment"]
    assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (three.factor,
                                                                                         three.min_in_sync)
    for key, value in (("default.replication.factor", three.factor), ("min.insync.replicas", three.min_in_sync),
                       ("offsets.topic.replication.factor", three.factor),
                       ("transaction.state.log.min.isr", three.min_in_sync)):
        assert f"\n{key}={value}\n" in entrypoint, key
    clients = COMPOSE["x-healthbook-env"]
    assert clients["HEALTHBOOK_BROKERS"] == "3"
    assert clients["HEALTHBOOK_KAFKA_BOOTSTRAP"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    for service in ("topics", "worker", "query-consumer"):
        assert set(KAFKA_NODES) <= set(COMPOSE["services"][service]["depends_on"]), service


def test_compose_partitions_match_the_default_settings():
    env = COMPOSE["x-healthbook-env"]
    assert int(env["HEALTHBOOK_VISIT_PARTITIONS"]) == Settings().visit_partitions
    assert int(env["HEALTHBOOK_MAX_VISIT_BYTES"]) == Settings().max_visit_bytes


def test_the_dockerfile_copies_every_package():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for package in PACKAGES:
        assert f"COPY {package} {package}" in dockerfile
    assert Path(PROJECT_ROOT / ".dockerignore").exists()
    assert "gcc" in dockerfile, "the image must build schemas/_native.c"


def test_pyproject_installs_every_package():
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    for package in PACKAGES:
        assert f'"{package}*"' in pyproject


def test_the_readme_topic_table_is_the_topic_catalogue():
    assert readme_table(Settings().visit_partitions) in (PROJECT_ROOT / "README.md").read_text()


def test_compose_secures_the_broker_as_the_local_stack_does():
    script = (PROJECT_ROOT / "stack" / "stack.sh").read_text()
    entrypoint = (PROJECT_ROOT / "stack" / "compose" / "kafka-entrypoint.sh").read_text()
    env = COMPOSE["services"]["kafka-1"]["environment"]
    for key in ("listener.security.protocol.map", "authorizer.class.name", "allow.everyone.if.no.acl.found",
                "sasl.mechanism.inter.broker.protocol", "super.users", "ssl.client.auth"):
        local = re.search(rf"^{re.escape(key)}=(.+)$", script, re.M).group(1)
        assert re.search(rf"^{re.escape(key)}={re.escape(local)}$", entrypoint, re.M), key
        name = "KAFKA_" + key.upper().replace(".", "_")
        if name in env:
            assert str(env[name]) == local, key


def test_each_compose_service_gets_only_its_own_secrets_and_runs_as_no_root():
    for name, service in COMPOSE["services"].items():
        assert ("root" not in str(service.get("user", "")) and "user" in service) or name == "postgres", name
        mounts = [str(v) for v in service.get("volumes", [])]
        logins = {m.split(":")[1].rsplit("/", 1)[1] for m in mounts if ":/secrets/credentials/" in m}
        if name in ("topics", "worker", "query-consumer"):
            assert logins == {service["environment"]["HEALTHBOOK_KAFKA_USER"]}, name
        assert not any(".local/keys:" in m or ".pem" in m or ".key" in m.split(":")[0] for m in mounts), name
