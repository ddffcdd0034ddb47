"""The command that runs the faust stream worker in the foreground."""

from __future__ import annotations

import argparse
import sys

from healthbook.config import Settings
from streams.worker import main as worker_main


def worker(settings: Settings, _: argparse.Namespace) -> None:
    """Run the faust stream worker until SIGINT or SIGTERM (faust reads its own command line)."""
    sys.argv = [sys.argv[0], "worker"]
    worker_main()
