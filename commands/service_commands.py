"""Commands that run the query consumer, confirm as a citizen, or run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from commands import render
from commands.demo import main as demo_main
from commands.identity_standin import IdentityPlatform, confirmation, ensure_identity_key
from consumers.query import run as run_query_consumer
from domain.replies import Reply
from healthbook.config import Settings
from healthbook.observability import use_json_logs


def query_consumer(settings: Settings, _: argparse.Namespace) -> None:
    """Run the consent-gated query consumer in the foreground."""
    if settings.log_format == "json":
        use_json_logs()
    else:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_query_consumer(settings))


def request(settings: Settings, args: argparse.Namespace) -> None:
    """Confirm the integration as a citizen through the identity-app stand-in and print the book."""
    async def run() -> Reply:
        async with IdentityPlatform(settings, ensure_identity_key(settings)) as platform:
            return await platform.ask(confirmation(args.personal_id, args.year))

    render.health_book(render.console(), asyncio.run(run()), f"Sổ sức khỏe điện tử — {args.personal_id} — {args.year}")


def demo(settings: Settings, _: argparse.Namespace) -> None:
    """Run the whole pipeline on a realistic batch."""
    sys.exit(demo_main(settings))
