"""The citizen page holds like a real app, tried over HTTP as an attacker would: guessing passcodes, rebinding DNS,
posting from another site, reusing an idle session, and reading cookies over TLS."""

from __future__ import annotations

import http.client
import re
import ssl
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commands.local_ca import LocalCA
from domain import sentences
from domain.registry_trust import TrustAnchors
from tests.page_server import served_page

PASSCODE = "135790"
PERSON = "079090001234"


class Clock:
    """The page's clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Browser:
    """A plain HTTP client that keeps cookies and sends the page's own Origin, as a browser on the page would."""

    def __init__(self, base: str, origin: str | None = None) -> None:
        parts = urlsplit(base)
        self.base, self.host, self.port, self.tls = base, parts.hostname, parts.port, parts.scheme == "https"
        self.origin = base if origin is None else origin
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        connection = http.client.HTTPSConnection(self.host, self.port, context=ssl._create_unverified_context()) \
            if self.tls else http.client.HTTPConnection(self.host, self.port)
        sent = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            if self.origin:
                sent["Origin"] = self.origin
        sent.update(headers or {})
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        for header in response.headers.get_all("set-cookie") or []:
            self.set_cookie_headers.append(header)
            for name, morsel in SimpleCookie(header).items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        text = response.read().decode("utf-8", "replace")
        connection.close()
        return response.status, text, dict(response.headers)

    def token(self, path: str) -> str:
        status, text, _ = self.request("GET", path)
        assert status == 200, (path, status)
        return re.search(r'name="csrf" value="([^"]+)"', text)[1]

    def sign_in(self, personal_id: str = PERSON) -> None:
        status, _, headers = self.request("POST", "/dang-nhap", {"personal_id": personal_id, "identity_level": "2",
                                                                 "csrf": self.token("/")})
        assert status == 303 and headers["location"] == "/ho-so-suc-khoe", status

    def confirm(self) -> None:
        status, _, _ = self.request("POST", "/so-suc-khoe-dien-tu/xac-nhan",
                                    {"csrf": self.token("/so-suc-khoe-dien-tu")})
        assert status == 303

    def passcode(self, code: str) -> tuple[int, str]:
        status, text, _ = self.request("POST", "/so-suc-khoe-dien-tu/passcode",
                                       {"passcode": code, "csrf": self.token("/so-suc-khoe-dien-tu/passcode")})
        return status, text


class NoPlatform:
    """These tests never reach the health book."""

    async def ask(self, request: dict, timeout: float = 30.0):  # pragma: no cover - never called
        raise AssertionError("the hardening tests stop before the book")


@pytest.fixture(scope="module")
def anchors(tmp_path_factory) -> TrustAnchors:
    ca = LocalCA.open(tmp_path_factory.mktemp("pki"))
    return ca.trust_anchors()


def test_five_wrong_passcodes_lock_the_personal_id_until_a_time_the_citizen_is_told(anchors):
    clock = Clock()
    with served_page(NoPlatform(), anchors, PASSCODE, clock) as base:
        browser = Browser(base)
        browser.sign_in()
        browser.confirm()
        for _ in range(4):
            assert browser.passcode("000000")[0] == 400
        status, text = browser.passcode("000000")
        assert status == 429 and "tạm thời bị khóa" in text and "thử lại sau 15:15 ngày 01/06/2026" in text
        assert browser.passcode(PASSCODE)[0] == 429, "the right passcode waits for the lock too"
        again = Browser(base)
        again.sign_in()
        again.confirm()
        assert again.passcode(PASSCODE)[0] == 429, "a new session does not reset the count"
        clock.now += timedelta(minutes=16)
        later = Browser(base)  # the idle sessions are over by now too
        later.sign_in()
        later.confirm()
        assert later.passcode(PASSCODE)[0] == 303, "after the lock the right passcode passes"


def test_only_the_configured_host_names_are_served(anchors):
    with served_page(NoPlatform(), anchors, PASSCODE) as base:
        browser = Browser(base)
        assert browser.request("GET", "/")[0] == 200
        rebound = browser.request("GET", "/", headers={"Host": "attacker.example"})
        assert rebound[0] == 400, "a DNS-rebound name is refused"


def test_a_form_without_its_token_or_from_another_origin_is_refused(anchors):
    with served_page(NoPlatform(), anchors, PASSCODE) as base:
        browser = Browser(base)
        status, text, _ = browser.request("POST", "/dang-nhap", {"personal_id": PERSON, "identity_level": "2"})
        assert status == 403 and sentences.FORM_REFUSED.citizen() in text
        browser.sign_in()
        token = browser.token("/so-suc-khoe-dien-tu")
        foreign = Browser(base, origin="http://attacker.example")
        foreign.cookies = dict(browser.cookies)
        assert foreign.request("POST", "/so-suc-khoe-dien-tu/xac-nhan", {"csrf": token})[0] == 403
        no_origin = Browser(base, origin="")
        no_origin.cookies = dict(browser.cookies)
        assert no_origin.request("POST", "/so-suc-khoe-dien-tu/xac-nhan", {"csrf": token})[0] == 403
        assert browser.request("POST", "/so-suc-khoe-dien-tu/xac-nhan", {"csrf": "forged"})[0] == 403
        assert browser.request("POST", "/so-suc-khoe-dien-tu/xac-nhan", {"csrf": token})[0] == 303


def test_a_session_idle_for_fifteen_minutes_is_over(anchors):
    clock = Clock()
    with served_page(NoPlatform(), anchors, PASSCODE, clock) as base:
        browser = Browser(base)
        browser.sign_in()
        clock.now += timedelta(minutes=14)
        assert browser.request("GET", "/ho-so-suc-khoe")[0] == 200, "used within 15 minutes: still signed in"
        clock.now += timedelta(minutes=14)
        assert browser.request("GET", "/ho-so-suc-khoe")[0] == 200, "each use starts the 15 minutes again"
        clock.now += timedelta(minutes=16)
        status, _, headers = browser.request("GET", "/ho-so-suc-khoe")
        assert status == 303 and headers["location"] == "/", "idle too long: signed out"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
                   .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "page.crt", directory / "page.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_cookies_are_secure_whenever_the_page_is_served_over_tls(anchors, tmp_path):
    with served_page(NoPlatform(), anchors, PASSCODE, tls=_self_signed(tmp_path)) as base:
        browser = Browser(base)
        browser.sign_in()
        assert browser.set_cookie_headers and all("secure" in h.lower() for h in browser.set_cookie_headers)
    with served_page(NoPlatform(), anchors, PASSCODE) as base:
        plain = Browser(base)
        plain.sign_in()
        assert all("secure" not in h.lower() for h in plain.set_cookie_headers), "http keeps cookies usable"
