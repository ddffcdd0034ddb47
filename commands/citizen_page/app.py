"""The citizen page: the identity app's own flow to the health book, served by the identity-platform stand-in.

A demo and test tool, not the identity app: it signs in anyone by personal ID (the demo picks the account
level), checks one demo passcode, and reaches the book only as the identity platform would, with signed
integration requests to the query consumer and its replies read back from Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from commands.citizen_page.guard import (
    IDLE_LIMIT,
    MAX_WRONG_PASSCODES,
    PasscodeLock,
    new_token,
    same_origin,
    token_matches,
)
from commands.identity_standin import ReplyTimeout, confirmation
from domain import sentences
from domain.registry_trust import TrustAnchors
from domain.replies import Reply, VisitView, refused
from domain.signature_check import IN_THE_LIST, SignatureCheck, check_visit_signature
from schemas import rules
from schemas.refusal_codes import RefusalCode, ReplyStatus

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "standin_session"
FORM_COOKIE = "standin_form"  # the sign-in form's token, before there is a session
REPLY_TIMEOUT = 30
ID_PROBLEMS = {"personal_id_format": sentences.PERSONAL_ID_FORMAT,
               "personal_id_province": sentences.PERSONAL_ID_PROVINCE}
VIETNAM = timezone(timedelta(hours=7))
FIRST_YEAR = 2016


class Asker(Protocol):
    """What the page needs of the identity platform: send a signed request and wait for its reply."""

    async def ask(self, request: dict[str, Any], timeout: float = 30.0) -> Reply: ...


@dataclass
class Session:
    """One signed-in citizen's progress through the flow, its forms' token and when it was last used."""

    personal_id: str
    identity_level: int
    last_seen: datetime
    confirmed: bool = False
    passcode_passed: bool = False
    csrf: str = field(default_factory=new_token)


def _signed_time(value: datetime) -> str:
    return value.astimezone(VIETNAM).strftime("%d/%m/%Y %H:%M")


class CitizenPage:
    """The flow's handlers and the state they share: sessions, templates and the identity platform."""

    def __init__(self, passcode: str, anchors: TrustAnchors,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.passcode, self.anchors, self.clock = passcode, anchors, clock
        self.lock = PasscodeLock()
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters.update(minute=sentences.minute, money=sentences.money, signed_time=_signed_time)
        self.templates.env.globals.update(visit_types=sentences.VISIT_TYPES, flags=sentences.RESULT_FLAGS,
                                          treatment_results=sentences.TREATMENT_RESULTS, refusal_codes=RefusalCode,
                                          reply_status=ReplyStatus,
                                          level_refusal=sentences.LEVEL_ONE_ACCOUNT.citizen())
        self.sessions: dict[str, Session] = {}
        self.platform: Asker | None = None
        self._asking = asyncio.Lock()  # one reader of the replies topic at a time

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """Render a template with the request's session and the token its forms carry."""
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        form_token = None if session else new_token()
        context.setdefault("csrf", session.csrf if session else form_token)
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        if form_token:
            response.set_cookie(FORM_COOKIE, form_token, httponly=True, samesite="strict", secure=_tls(request))
        return response

    def session_of(self, request: Request) -> Session | None:
        """The signed-in citizen of a request, if any; a session idle for 15 minutes is over."""
        token = request.cookies.get(COOKIE, "")
        session = self.sessions.get(token)
        now = self.clock()
        if session is not None and now - session.last_seen > IDLE_LIMIT:
            self.sessions.pop(token, None)
            return None
        if session is not None:
            session.last_seen = now
        return session

    async def form(self, request: Request) -> dict[str, Any] | None:
        """A POSTed form, or None when it does not come from this page with this session's (or sign-in's) token."""
        form = dict(await request.form())
        session = self.session_of(request)
        expected = session.csrf if session else request.cookies.get(FORM_COOKIE)
        if not same_origin(request) or not token_matches(form.get("csrf"), expected):
            return None
        return form

    def refused_form(self, request: Request) -> Response:
        """The answer to a form from elsewhere or without its token."""
        return self.page(request, "refusal_page.html", 403, message=sentences.FORM_REFUSED.citizen())

    def ready(self, request: Request) -> Session | None:
        """The citizen, once they confirmed and passed the passcode check."""
        session = self.session_of(request)
        return session if session and session.confirmed and session.passcode_passed else None

    def checked(self, visit: VisitView) -> tuple[VisitView, SignatureCheck]:
        """The visit as the page shows it, with its signature checked against the page's own trust anchors.

        A verified visit is shown as decoded from the bytes the clinic signed, never from the reply's fields.
        """
        check = check_visit_signature(visit, self.anchors)
        return check.signed or visit, check

    async def ask(self, request: dict[str, Any]) -> Reply:
        """Send a signed request to the query consumer and wait for its reply; a refusal when none comes."""
        assert self.platform is not None, "the page's identity platform is opened by the app's lifespan"
        async with self._asking:
            try:
                return await self.platform.ask(request, timeout=REPLY_TIMEOUT)
            except ReplyTimeout as late:
                log.warning("%s", late)
                return refused(request["request_id"], RefusalCode.NO_REPLY,
                               sentences.NO_REPLY.said(seconds=REPLY_TIMEOUT), request["year"])

    async def sign_in_form(self, request: Request) -> Response:
        return self.page(request, "sign_in.html", error=None, personal_id="")

    async def sign_in(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.refused_form(request)
        personal_id = str(form.get("personal_id", "")).strip()
        level = 1 if str(form.get("identity_level")) == "1" else 2
        try:
            rules.check_personal_id(personal_id, None, None)
        except rules.RuleBroken as broken:
            return self.page(request, "sign_in.html", 400, personal_id=personal_id,
                             error=ID_PROBLEMS.get(broken.rule, sentences.PERSONAL_ID_FORMAT).citizen())
        token = secrets.token_urlsafe(24)
        self.sessions[token] = Session(personal_id, level, self.clock())
        response = RedirectResponse("/ho-so-suc-khoe", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=_tls(request))
        response.delete_cookie(FORM_COOKIE, secure=_tls(request), httponly=True, samesite="strict")
        return response

    async def sign_out(self, request: Request) -> Response:
        if await self.form(request) is None:
            return self.refused_form(request)
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, secure=_tls(request), httponly=True, samesite="strict")
        return response

    async def health_records(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        return self.page(request, "health_records.html", session=session)

    async def health_book(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        if session.confirmed and session.passcode_passed:
            return RedirectResponse("/so-suc-khoe-dien-tu/nam", status_code=303)
        return self.page(request, "confirm.html", session=session,
                         confirmation_text=sentences.CONFIRMATION.citizen())

    async def confirm(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        if await self.form(request) is None:
            return self.refused_form(request)
        session.confirmed = True
        return RedirectResponse("/so-suc-khoe-dien-tu/passcode", status_code=303)

    async def passcode_form(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.confirmed:
            return RedirectResponse("/so-suc-khoe-dien-tu", status_code=303)
        return self.page(request, "passcode.html", session=session, error=None)

    async def passcode_check(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not session.confirmed:
            return RedirectResponse("/so-suc-khoe-dien-tu", status_code=303)
        form = await self.form(request)
        if form is None:
            return self.refused_form(request)
        now = self.clock()
        locked = self.lock.locked_until(session.personal_id, now)
        if locked is None and not secrets.compare_digest(str(form.get("passcode", "")).encode(),
                                                         self.passcode.encode()):
            locked = self.lock.wrong(session.personal_id, now)
            if locked is None:
                return self.page(request, "passcode.html", 400, session=session,
                                 error=sentences.WRONG_PASSCODE.citizen())
        if locked is not None:
            return self.page(request, "passcode.html", 429, session=session, error=sentences.PASSCODE_LOCKED.citizen(
                count=MAX_WRONG_PASSCODES, until=locked.astimezone(VIETNAM).strftime("%H:%M ngày %d/%m/%Y")))
        self.lock.passed(session.personal_id)
        session.passcode_passed = True
        return RedirectResponse("/so-suc-khoe-dien-tu/nam", status_code=303)

    async def year_view(self, request: Request) -> Response:
        session = self.ready(request)
        if session is None:
            return RedirectResponse("/so-suc-khoe-dien-tu", status_code=303)
        year = _chosen_year(request)
        years = list(range(datetime.now(UTC).year, FIRST_YEAR - 1, -1))
        reply = None if year is None else await self.ask(
            confirmation(session.personal_id, year, identity_level=session.identity_level))
        shown = [(visit, IN_THE_LIST) for visit in reply.visits] if reply else []  # checked in each visit's detail
        return self.page(request, "year.html", session=session, year=year, years=years, reply=reply, shown=shown)

    async def visit_view(self, request: Request) -> Response:
        session = self.ready(request)
        if session is None:
            return RedirectResponse("/so-suc-khoe-dien-tu", status_code=303)
        year = _chosen_year(request) or datetime.now(UTC).year
        facility, visit_code = request.path_params["facility"], request.path_params["visit_code"]
        reply = await self.ask(confirmation(session.personal_id, year, identity_level=session.identity_level,
                                            detail=(facility, visit_code)))
        found = reply.visits[0] if reply.status == ReplyStatus.OK and reply.visits else None
        visit, check = self.checked(found) if found else (None, None)
        return self.page(request, "visit.html", 200 if visit else 404, session=session, year=year, reply=reply,
                         visit=visit, check=check)


def _tls(request: Request) -> bool:
    """Whether the page is served over TLS, so its cookies are marked Secure."""
    return request.url.scheme == "https"


def _chosen_year(request: Request) -> int | None:
    text = request.query_params.get("nam", "")
    return int(text) if text.isdigit() and FIRST_YEAR <= int(text) <= datetime.now(UTC).year else None


def make_app(ask_factory: Callable[[], AbstractAsyncContextManager[Asker]], passcode: str,
             anchors: TrustAnchors, hosts: list[str] | None = None,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Starlette:
    """The page's ASGI app; ask_factory opens the identity platform's connection for the app's lifetime.

    anchors are the CA certificates the deployment publishes to the identity platform: the only keys a
    visit's signature is checked against.
    """
    page = CitizenPage(passcode, anchors, clock)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with ask_factory() as opened:
            page.platform = opened
            yield
            page.platform = None

    return Starlette(routes=[
        Route("/", page.sign_in_form), Route("/dang-nhap", page.sign_in, methods=["POST"]),
        Route("/dang-xuat", page.sign_out, methods=["POST"]),
        Route("/ho-so-suc-khoe", page.health_records),
        Route("/so-suc-khoe-dien-tu", page.health_book),
        Route("/so-suc-khoe-dien-tu/xac-nhan", page.confirm, methods=["POST"]),
        Route("/so-suc-khoe-dien-tu/passcode", page.passcode_form),
        Route("/so-suc-khoe-dien-tu/passcode", page.passcode_check, methods=["POST"]),
        Route("/so-suc-khoe-dien-tu/nam", page.year_view),
        Route("/so-suc-khoe-dien-tu/luot-kham/{facility}/{visit_code}", page.visit_view),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], lifespan=lifespan, middleware=[Middleware(TrustedHostMiddleware,
                                                 allowed_hosts=hosts or ["127.0.0.1", "localhost"])])
