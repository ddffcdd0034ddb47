"""What keeps the citizen page as hard to misuse as a real app: passcode lockout, form tokens, origins, idle expiry."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from starlette.requests import Request

MAX_WRONG_PASSCODES = 5
LOCKED_FOR = timedelta(minutes=15)
IDLE_LIMIT = timedelta(minutes=15)


@dataclass
class Attempts:
    """Wrong passcodes entered for one personal ID, and until when it is locked."""

    wrong: int = 0
    locked_until: datetime | None = None


@dataclass
class PasscodeLock:
    """Counts wrong passcodes per personal ID (never per session, which anyone can open anew) and locks after five."""

    attempts: dict[str, Attempts] = field(default_factory=dict)

    def locked_until(self, personal_id: str, now: datetime) -> datetime | None:
        """Until when this personal ID may not try a passcode, or None when it may."""
        held = self.attempts.get(personal_id)
        if held is None or held.locked_until is None:
            return None
        if now >= held.locked_until:
            self.attempts.pop(personal_id, None)
            return None
        return held.locked_until

    def wrong(self, personal_id: str, now: datetime) -> datetime | None:
        """Count a wrong passcode; return until when the ID is now locked, if this was one too many."""
        held = self.attempts.setdefault(personal_id, Attempts())
        held.wrong += 1
        if held.wrong >= MAX_WRONG_PASSCODES:
            held.locked_until = now + LOCKED_FOR
        return held.locked_until

    def passed(self, personal_id: str) -> None:
        """The right passcode: forget the wrong ones."""
        self.attempts.pop(personal_id, None)


def new_token() -> str:
    """A token for a form or a session, unguessable."""
    return secrets.token_urlsafe(24)


def same_origin(request: Request) -> bool:
    """Whether a POST comes from this page itself: its Origin (or, without one, its Referer) is the page's own."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    parts = urlsplit(claimed)
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return f"{parts.scheme}://{parts.netloc}" == own


def token_matches(given: object, expected: str | None) -> bool:
    """Whether a form's token is the one this session (or sign-in form) was given."""
    return isinstance(given, str) and expected is not None and secrets.compare_digest(given.encode(),
                                                                                      expected.encode())
