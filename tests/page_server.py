"""The citizen page served in this process on loopback, in front of any identity platform a test brings."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn

from commands.citizen_page.app import make_app
from domain.registry_trust import TrustAnchors


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_page(platform: Any, anchors: TrustAnchors, passcode: str, clock: Callable[[], datetime] | None = None,
                tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Serve the page until the block ends and yield its base URL; tls is (certificate, key) for https."""
    @asynccontextmanager
    async def opened() -> AsyncIterator[Any]:
        yield platform

    options = {} if clock is None else {"clock": clock}
    port = free_port()
    config = uvicorn.Config(make_app(opened, passcode, anchors, **options), host="127.0.0.1", port=port,
                            log_level="warning", ssl_certfile=tls and str(tls[0]), ssl_keyfile=tls and str(tls[1]))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
