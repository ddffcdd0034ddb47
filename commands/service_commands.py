"""Commands that run the query consumer, act as the identity platform (request, export, citizen page), or the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from commands import render
from commands.demo import main as demo_main
from commands.identity_standin import IdentityPlatform, confirmation, ensure_identity_key
from consumers.query import run as run_query_consumer
from domain.replies import Reply
from healthbook.config import Settings
from healthbook.observability import use_json_logs
from schemas.refusal_codes import ReplyStatus


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


def citizen_page(settings: Settings, args: argparse.Namespace) -> None:
    """Serve the citizen page, the identity-app stand-in's flow to the health book, on loopback until stopped."""
    import uvicorn

    from commands.citizen_page.app import make_app

    signer = ensure_identity_key(settings)
    app = make_app(lambda: IdentityPlatform(settings, signer), args.passcode, settings.trust_anchors(),
                   hosts=[host.strip() for host in settings.page_hosts.split(",") if host.strip()])
    print(f"citizen page (identity-app stand-in): http://127.0.0.1:{args.port}/  demo passcode: {args.passcode}",
          flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def export(settings: Settings, args: argparse.Namespace) -> None:
    """Print a citizen's health book as a FHIR R4 Bundle, asked of the query consumer as the identity platform."""
    detail = _visit_ref(args.visit) if args.visit else None
    year = args.year or datetime.now(UTC).year
    request = confirmation(args.personal_id, year, detail=detail, answer_format="fhir",
                           every_year=args.year is None and detail is None)

    async def run() -> Reply:
        async with IdentityPlatform(settings, ensure_identity_key(settings)) as platform:
            return await platform.ask(request)

    reply = asyncio.run(run())
    if reply.status != ReplyStatus.OK or reply.fhir_bundle is None:
        sys.exit(f"refused ({reply.refusal_code}): {reply.message}")
    text = json.dumps(json.loads(reply.fhir_bundle), ensure_ascii=False, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"{args.out}: {reply.message}")
    else:
        print(text)


def _visit_ref(text: str) -> tuple[str, str]:
    facility, _, visit_code = text.partition("/")
    if not facility or not visit_code:
        sys.exit(f"--visit must be FACILITY/MA_LK, e.g. 79001/79001-2026-000123 (got {text!r})")
    return facility, visit_code


def demo(settings: Settings, args: argparse.Namespace) -> None:
    """Run the whole pipeline on a realistic batch, then serve the citizen page until stopped."""
    sys.exit(demo_main(settings, None if args.no_page else args.port))
