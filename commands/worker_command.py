"""The command that runs the faust stream worker in the foreground, or N of them under one supervisor."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from prometheus_client import start_http_server

from commands.processes import settings_env
from healthbook import observability as metrics
from healthbook.config import PROJECT_ROOT, Settings
from streams.worker import main as worker_main

METRICS_PORT_STEP = 10  # worker i serves metrics on the base port + 10 i (9108, 9118, …), clear of the query's 9109
MAX_BACKOFF_SECONDS = 30.0


def worker(settings: Settings, args: argparse.Namespace) -> None:
    """Run the faust stream worker until SIGINT or SIGTERM (faust reads its own command line)."""
    processes = getattr(args, "processes", 1)
    if processes > 1:
        sys.exit(Supervisor(settings, processes).run())
    sys.argv = [sys.argv[0], "worker"]
    worker_main(settings)


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    not_before: float = 0.0
    backoff: float = 0.5


class Supervisor:
    """Runs N workers of one group, so the partitions spread over N cores; restarts one that exits.

    A worker that fail-stops on a bug (exit 70) or crashes is started again after a back-off
    (0.5 s doubling to 30 s), as compose or systemd would; SIGTERM or SIGINT stops them all.
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.children = [_Child(i) for i in range(processes)]
        self.stopping = False

    def run(self) -> int:
        """Start every worker and keep them running until asked to stop; return the exit code."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        if self.settings.supervisor_metrics_port:
            try:
                start_http_server(self.settings.supervisor_metrics_port, self.settings.metrics_host)
            except OSError as exc:  # a taken port is said, not fatal: the workers matter more
                print(f"cannot serve the supervisor's metrics on port {self.settings.supervisor_metrics_port}: {exc}",
                      file=sys.stderr, flush=True)
        for child in self.children:
            self._start(child)
        while not self.stopping:
            for child in self.children:
                self._tend(child)
            time.sleep(0.2)
        return self._stop_all()

    def _start(self, child: _Child) -> None:
        env = settings_env(self.settings)
        if self.settings.worker_metrics_port:
            port = self.settings.worker_metrics_port + METRICS_PORT_STEP * child.index
            env["HEALTHBOOK_WORKER_METRICS_PORT"] = str(port)
        child.process = subprocess.Popen([sys.executable, "-m", "commands.cli", "worker"], cwd=PROJECT_ROOT, env=env)
        print(f"worker {child.index} started (pid {child.process.pid})", file=sys.stderr, flush=True)

    def _tend(self, child: _Child) -> None:
        """Start again a worker that has exited, once its back-off has passed."""
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return
        now = time.monotonic()
        if child.not_before == 0.0:
            child.not_before = now + child.backoff
            print(f"worker {child.index} exited with {code}; starting it again in {child.backoff:.1f} s",
                  file=sys.stderr, flush=True)
            child.backoff = min(child.backoff * 2, MAX_BACKOFF_SECONDS)
            return
        if now >= child.not_before:
            child.not_before = 0.0
            self._start(child)
            metrics.RESTARTS.labels(str(child.index)).inc()

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _stop_all(self, timeout: float = 30.0) -> int:
        """SIGTERM every worker, wait for them, SIGKILL what is left; 0 when all stopped cleanly."""
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return 0
