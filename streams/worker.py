"""Runs the faust worker: python -m streams.worker (or 'healthbook worker')."""

from __future__ import annotations

from faust.worker import Worker

from healthbook.config import Settings
from healthbook.gc_tuning import tune_for_service
from streams.app import create_app


def main(loglevel: str = "info") -> None:
    """Start the worker in the foreground until SIGINT or SIGTERM."""
    app = create_app(Settings())
    tune_for_service()
    Worker(app, loglevel=loglevel).execute_from_commandline()


if __name__ == "__main__":
    main()
