"""The local Kafka cluster's nodes for the fault suite and the soak: who leads, kill, pause, restart, wait."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.kafka import Broker

STACK = PROJECT_ROOT / "stack" / "stack.sh"
CLUSTER_HOME = Path(os.environ.get("KAFKA_CLUSTER_HOME", PROJECT_ROOT / "stack" / ".kafka" / "cluster"))


class StackFailed(RuntimeError):
    """A stack/stack.sh action exited with an error."""


def stack(action: str, *args: str, brokers: int | None = None) -> str:
    """Run a stack/stack.sh action (kafka-down, pg-up, node-kill 2, …) and return its output, or raise."""
    env = dict(os.environ)
    if brokers is not None:
        env["HEALTHBOOK_BROKERS"] = str(brokers)
    done = subprocess.run(["bash", str(STACK), action, *args], capture_output=True, text=True, env=env)
    if done.returncode:
        raise StackFailed(f"stack/stack.sh {action} {' '.join(args)} failed (exit {done.returncode}):\n"
                          f"{done.stdout}{done.stderr}")
    return done.stdout


def use_brokers(brokers: int) -> Settings:
    """Start the local stack with this many brokers (stopping the other kind) and return settings for it."""
    os.environ["HEALTHBOOK_BROKERS"] = str(brokers)
    stack("up", brokers=brokers)
    return Settings()


def node_pid(node: int) -> int | None:
    """The process id of a running cluster node, or None."""
    out = stack("node-pid", str(node), brokers=3).strip() if _has_pid_file(node) else ""
    return int(out) if out.isdigit() else None


def _has_pid_file(node: int) -> bool:
    return (CLUSTER_HOME / f"node-{node}" / "kafka.pid").exists()


def kill_node(node: int) -> None:
    """SIGKILL a cluster node, as a power cut would."""
    stack("node-kill", str(node), brokers=3)


def stop_node(node: int) -> None:
    """Stop a cluster node cleanly (SIGTERM: it hands its leaderships over first)."""
    stack("node-down", str(node), brokers=3)


def start_node(node: int) -> None:
    """Start a stopped cluster node and wait until its port answers."""
    stack("node-up", str(node), brokers=3)


def pause_node(node: int) -> None:
    """SIGSTOP a cluster node: it holds its connections and answers nothing."""
    pid = node_pid(node)
    if pid:
        os.kill(pid, signal.SIGSTOP)


def resume_node(node: int) -> None:
    """SIGCONT a paused cluster node."""
    pid = node_pid(node)
    if pid:
        os.kill(pid, signal.SIGCONT)


def quorum_leader() -> int | None:
    """The node leading the KRaft controller quorum, as the newest of the nodes' quorum-state files records it.

    None while an election is under way: a voter records the new epoch before it knows who won.
    """
    records = []
    for state in CLUSTER_HOME.glob("node-*/data/__cluster_metadata-0/quorum-state"):
        try:
            recorded = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        records.append((recorded.get("leaderEpoch", -1), recorded.get("leaderId", -1)))
    if not records:
        raise StackFailed(f"no node under {CLUSTER_HOME} has a quorum-state file; is the cluster running?")
    leader = max(records)[1]
    return leader if leader >= 0 else None


async def partition_leader(settings: Settings, topic: str, partition: int = 0) -> int:
    """The broker that leads one partition of a topic."""
    client = kafka.admin(Broker.of(settings, "admin"))
    await client.start()
    try:
        (described,) = await client.describe_topics([topic])
    finally:
        await client.close()
    return next(p["leader"] for p in described["partitions"] if p["partition"] == partition)


async def fully_replicated(settings: Settings, timeout: float = 180.0) -> float:
    """Wait until every partition of every topic has all its replicas in sync; return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            client = kafka.admin(Broker.of(settings, "admin"), request_timeout_ms=10_000)
            await client.start()
            try:
                described = await client.describe_topics(await client.list_topics())
            finally:
                await client.close()
            behind = [f"{d['topic']}[{p['partition']}]" for d in described for p in d["partitions"]
                      if len(p["isr"]) < len(p["replicas"]) or p["leader"] < 0]
            if not behind:
                return time.monotonic() - started
        except Exception as exc:  # a node that is still starting refuses; ask again
            behind = [f"({type(exc).__name__})"]
        if time.monotonic() > deadline:
            raise StackFailed(f"{len(behind)} partitions still under-replicated after {timeout:.0f}s: "
                              f"{', '.join(behind[:5])}")
        await asyncio.sleep(1.0)


def memory_kib(pid: int, field: str = "VmRSS") -> int | None:
    """A process's resident memory in KiB (VmRSS now, VmHWM its peak), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
