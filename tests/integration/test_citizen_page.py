"""The citizen page in a real headless Chromium: the identity app's flow, a year, a visit in full, refusals.

The page runs as 'healthbook citizen-page' and reaches the book only through signed integration requests
to the running query consumer. HEALTHBOOK_SCREENSHOTS=DIR (make screenshots) also saves the year view and
one visit's detail there, for the README.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from commands.identity_standin import DEMO_PASSCODE
from commands.processes import ServiceProcess
from domain import sentences
from tests.browser import (
    chromium,
    confirm_and_pass,
    fits_the_screen,
    foreign_assets,
    low_contrast,
    open_visit,
    pick_year,
    screenshot,
    sign_in,
    sign_in_by_keyboard,
    text_of,
    unlabelled_fields,
    wait_for,
)
from tests.factories import full_visit, visit
from tests.integration.conftest import LOGS, free_port, new_citizen, next_sequence, publish_and_wait

pytestmark = pytest.mark.integration
SCREENSHOTS = os.environ.get("HEALTHBOOK_SCREENSHOTS")


@pytest.fixture(scope="module")
async def page_url(settings, identity):
    """The citizen page, served against the session's query consumer (the identity fixture trusts its key)."""
    port = free_port()
    page = ServiceProcess("citizen-page", settings, LOGS / "citizen-page.log", ("--port", str(port)))
    await page.start().listening(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        page.stop()


def _walk_a_full_year(driver: WebDriver, base: str, personal_id: str, full_code: str, plain_code: str) -> None:
    sign_in(driver, base, personal_id)
    assert driver.find_element(By.TAG_NAME, "h1").text == "Hồ sơ sức khỏe"
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi"
    driver.find_element(By.LINK_TEXT, "Sổ sức khỏe điện tử").click()
    assert driver.find_element(By.ID, "xac-nhan-noi-dung").text == sentences.CONFIRMATION.citizen()
    driver.find_element(By.XPATH, "//button[normalize-space()='Xác nhận']").click()
    driver.find_element(By.ID, "passcode").send_keys("000000")
    driver.find_element(By.XPATH, "//button[normalize-space()='Tiếp tục']").click()
    wait_for(driver, ".error", "Mã passcode không đúng")
    driver.find_element(By.ID, "passcode").send_keys(DEMO_PASSCODE)
    driver.find_element(By.XPATH, "//button[normalize-space()='Tiếp tục']").click()

    pick_year(driver, 2025)
    listed = text_of(driver)
    assert "2 lượt khám chữa bệnh BHYT năm 2025" in listed
    assert "Đã ký số bởi" not in listed, "a list carries no envelope: its signatures are checked in each detail"
    assert listed.count("Chữ ký số được kiểm tra khi mở chi tiết lượt khám") == 2
    assert sentences.SEALED_VISIT.citizen() in listed, "the visit with an XML15 table is sealed in the list"
    for hidden in ("2RHZE", "XML15", "Paracetamol", "Viêm họng", "J02.9", "Tổng phân tích", "79004"):
        assert hidden not in listed, f"{hidden!r} of the sealed visit is in the list"
    assert fits_the_screen(driver) and unlabelled_fields(driver) == [] and foreign_assets(driver) == []
    assert low_contrast(driver) == [] and len(driver.find_elements(By.TAG_NAME, "h1")) == 1
    if SCREENSHOTS:
        screenshot(driver, Path(SCREENSHOTS) / "citizen-page-year.png")

    open_visit(driver, full_code)
    detail = text_of(driver)
    for shown in ("Thông tin chung", "Paracetamol 500mg", "Liều dùng: 1 viên/lần, 3 lần/ngày",
                  "Cách dùng: Uống sau ăn", "Số lượng bạch cầu", "11.2 G/L", "4.0 - 10.0",
                  "Cao hơn bình thường (Tăng nhẹ)",
                  "Tổng phân tích tế bào máu \u00d7 1: Bạch cầu tăng nhẹ", "Tóm tắt ra viện",
                  "Chẩn đoán ra viện: Viêm họng cấp", "Chuyển tuyến", "79004", "Khám chuyên khoa tim mạch",
                  "Hẹn tái khám", "Quỹ BHYT trả", "Người bệnh trả", "Thông tin nhạy cảm", "PHAC_DO_DTRI_LAO",
                  "2RHZE/4RHE", "Đã ký số bởi cơ sở KCB 79001 lúc", "Chữ ký số hợp lệ (khóa k1 của cơ sở 79001)",
                  "J02.9, I10 · Viêm họng cấp; Tăng huyết áp", "Kết quả điều trị", "Đỡ"):
        assert shown in detail, f"the visit's detail lacks {shown!r}:\n{detail}"
    assert fits_the_screen(driver) and foreign_assets(driver) == [] and low_contrast(driver) == []
    if SCREENSHOTS:
        screenshot(driver, Path(SCREENSHOTS) / "citizen-page-visit.png")

    driver.find_element(By.PARTIAL_LINK_TEXT, "Danh sách năm 2025").click()
    pick_year(driver, 2019)
    assert driver.find_element(By.CSS_SELECTOR, "p.empty").text == sentences.EMPTY_HISTORY.citizen()


def _walk_as_level_one(driver: WebDriver, base: str, personal_id: str) -> None:
    driver.get(base + "/")
    driver.find_element(By.ID, "personal_id").send_keys("999000000001", Keys.ENTER)  # no province 999
    wait_for(driver, ".error", "Ba chữ số đầu của số định danh cá nhân không phải mã tỉnh")
    sign_in_by_keyboard(driver, base, personal_id, level=1)
    assert "(mức 1)" in driver.find_element(By.CSS_SELECTOR, ".who").text, "the arrow key chose level 1"
    confirm_and_pass(driver, DEMO_PASSCODE)
    pick_year(driver, 2025)
    shown = text_of(driver)
    assert sentences.LEVEL_ONE_ACCOUNT.citizen() in shown and "mức 2" in shown
    assert "Đã ký số" not in shown, "a level-1 account sees no visit"


async def test_a_citizen_walks_the_apps_flow_to_a_year_and_a_visit_in_full(clinics, db, identity, page_url):
    alice = new_citizen()
    full = full_visit(alice, next_sequence(), datetime(2025, 4, 2, 9, 0))
    plain = visit(person=alice, sequence=next_sequence(), admitted=datetime(2025, 9, 12, 14, 30))
    await publish_and_wait(clinics, db, full, plain)
    with chromium() as driver:
        await asyncio.to_thread(_walk_a_full_year, driver, page_url, alice.personal_id, full["visit_code"],
                                plain["visit_code"])


async def test_a_level_one_account_is_told_it_needs_level_two(clinics, db, identity, page_url):
    bob = new_citizen()
    seen = visit(person=bob, sequence=next_sequence(), admitted=datetime(2025, 5, 5, 8, 0))
    await publish_and_wait(clinics, db, seen)
    with chromium() as driver:
        await asyncio.to_thread(_walk_as_level_one, driver, page_url, bob.personal_id)
