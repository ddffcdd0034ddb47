"""The citizen page behind a relay that tampers with replies: an honest visit reads as verified, a tampered one as
failed with why, in a real Chromium. The page checks each visit's detail (the reply that carries its envelope)
against its own CA certificates, never the reply's; a year's list claims no signature."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from commands.local_ca import LocalCA
from domain import replies
from domain.replies import Reply
from schemas.envelope import Signer
from synthetic.population import CLINICS
from tests.browser import chromium, confirm_and_pass, open_visit, pick_year, sign_in, text_of
from tests.factories import SENSITIVE, citizen, signed_entry, visit
from tests.page_server import served_page

PASSCODE = "246810"
CLINIC, RELAY = Signer.generate("k1"), Signer.generate("k1")
PERSON = citizen(61)


class TamperingRelay:
    """Answers the page as healthbook would, then changes what it relays: the attacker between the two."""

    def __init__(self, ca: LocalCA, relay_ca: LocalCA) -> None:
        since = datetime.now(UTC) - timedelta(days=1)
        honest = visit(person=PERSON, sequence=1, admitted=datetime(2025, 3, 3, 9, 0), main_diagnosis_code="J06.9",
                       discharge_diagnosis="Viêm mũi họng cấp")
        altered = visit(person=PERSON, sequence=2, admitted=datetime(2025, 4, 4, 9, 0), main_diagnosis_code="J06.9",
                        discharge_diagnosis="Viêm mũi họng cấp")
        resigned = visit(person=PERSON, sequence=3, admitted=datetime(2025, 5, 5, 9, 0), main_diagnosis_code="Z00.0",
                         discharge_diagnosis="Khỏe mạnh")
        self.entries = [signed_entry(honest, CLINIC, ca.entry("79001", CLINIC, since).certificate),
                        signed_entry(altered, CLINIC, ca.entry("79001", CLINIC, since).certificate),
                        signed_entry(resigned, RELAY, relay_ca.entry("79001", RELAY, since).certificate)]
        self.codes = [e.record["visit_code"] for e in self.entries]

    def _tampered(self, reply: Reply) -> Reply:
        visits = [v.model_copy(update={"diagnosis_codes": ["Z00.0"], "diagnosis_names": "Khỏe mạnh"})
                  if v.visit_code == self.codes[1] else v for v in reply.visits]
        return reply.model_copy(update={"visits": visits})

    async def ask(self, request: dict[str, Any], timeout: float = 30.0) -> Reply:
        if request.get("detail"):
            entry = next(e for e in self.entries if e.record["visit_code"] == request["detail"]["visit_code"])
            return self._tampered(replies.detail_served(request["request_id"], request["year"], entry))
        return self._tampered(replies.year_served(request["request_id"], request["year"], self.entries, SENSITIVE))


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("pki"))


def _walk(base: str, relay: TamperingRelay) -> None:
    with chromium() as driver:
        sign_in(driver, base, PERSON.personal_id)
        confirm_and_pass(driver, PASSCODE)
        pick_year(driver, 2025)
        cards = {code: driver.find_element(By.CSS_SELECTOR, f"li.visit:has(a[href*='/{code}?'])").text
                 for code in relay.codes}
        for card in cards.values():  # a list carries no envelope: nothing in it is called signed
            assert "Chữ ký số được kiểm tra khi mở chi tiết lượt khám." in card and "Đã ký số bởi" not in card, card
        assert f"{CLINICS['79001']} (79001)" in cards[relay.codes[0]], "named as its certificate names it"
        open_visit(driver, relay.codes[0])
        honest = text_of(driver)
        assert "Chữ ký số hợp lệ (khóa k1 của cơ sở 79001)" in honest and "Đã ký số bởi cơ sở KCB 79001" in honest
        assert "J06.9" in honest, honest
        driver.back()
        open_visit(driver, relay.codes[1])
        altered = text_of(driver)
        assert "Chữ ký số KHÔNG hợp lệ" in altered and "không được xác thực" in altered, altered
        assert "Đã ký số bởi" not in altered, "nothing tampered is called signed"
        driver.back()
        open_visit(driver, relay.codes[2])
        resigned = text_of(driver)
        assert "Chữ ký số KHÔNG hợp lệ" in resigned and "not issued by a trusted clinic CA" in resigned, resigned


async def test_the_page_shows_an_honest_visit_verified_and_tampered_ones_failed_with_why(ca, tmp_path):
    relay = TamperingRelay(ca, LocalCA.open(tmp_path / "relay-ca"))
    anchors = ca.trust_anchors()
    with served_page(relay, anchors, PASSCODE) as base:
        await asyncio.to_thread(_walk, base, relay)
