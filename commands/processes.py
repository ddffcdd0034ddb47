"""Starting and stopping the worker and the query consumer as child processes (demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from healthbook.config import PROJECT_ROOT, Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that gives a child process the same settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"HEALTHBOOK_{name.upper()}"] = str(value)
    return env


class ServiceProcess:
    """One long-running healthbook command in a child process, logging to a file."""

    def __init__(self, command: str, settings: Settings, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.command = command
        self.args = args
        self.settings = settings
        self.log_path = log_path
        self.name = log_path.stem  # how reports call it
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        """Launch 'healthbook COMMAND'."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", self.command, *self.args],
            cwd=PROJECT_ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def _env(self) -> dict[str, str]:
        """The settings, with the service logging in to the broker as its own role, not as its parent."""
        env = settings_env(self.settings)
        env.pop("HEALTHBOOK_KAFKA_USER", None)
        return env

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self.process is not None and self.process.poll() is None

    async def listening(self, port: int, timeout: float = 60.0) -> ServiceProcess:
        """Wait until the child accepts connections on 127.0.0.1:port; raise with its log if it dies or never does."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return self
            except OSError:
                if not self.running or time.monotonic() > deadline:
                    raise RuntimeError(f"'healthbook {self.command}' is not listening on port {port}; "
                                       f"its log ends:\n{self.log_tail()}") from None
                await asyncio.sleep(0.3)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the child to stop (SIGTERM), and kill it if it does not within timeout."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the child, as a crash would."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP the child, as a stalled machine or a long GC pause would."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused child."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self.process.pid if self.running and self.process else None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's log, for error messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
