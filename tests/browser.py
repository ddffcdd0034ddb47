"""Headless Chromium (Debian's chromium and chromium-driver) driven by Selenium through the citizen page."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

PHONE_WIDTH = 360
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


class BrowserMissing(RuntimeError):
    """Chromium or its driver is not installed: 'make browser' installs Debian's chromium and chromium-driver."""


@contextmanager
def chromium(width: int = PHONE_WIDTH, height: int = 900) -> Iterator[WebDriver]:
    """A headless Chromium the size of a phone screen, with no network beyond loopback and a fresh profile."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        raise BrowserMissing(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run 'make browser' (Debian: apt-get install "
                             "chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="healthbook-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", "--lang=vi"):
        options.add_argument(flag)
    # a desktop window cannot be narrower than about 500 px; emulating the phone sets the viewport exactly
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height,
                                                                           "pixelRatio": 2}})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(90)
        driver.implicitly_wait(30)  # each step waits for the next page's own elements to appear
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def text_of(driver: WebDriver) -> str:
    """Everything the screen shows in the main area, as the reader sees it."""
    return driver.find_element(By.TAG_NAME, "main").text


def sign_in(driver: WebDriver, base: str, personal_id: str, level: int = 2) -> None:
    """Sign in to the stand-in with a personal ID at an account level."""
    driver.get(base + "/")
    driver.find_element(By.ID, "personal_id").send_keys(personal_id)
    driver.find_element(By.CSS_SELECTOR, f"input[name=identity_level][value='{level}']").click()
    driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    wait_for(driver, "h1", "Hồ sơ sức khỏe")


def confirm_and_pass(driver: WebDriver, passcode: str) -> None:
    """From 'Hồ sơ sức khỏe': open the book, press Xác nhận, enter the passcode."""
    driver.find_element(By.LINK_TEXT, "Sổ sức khỏe điện tử").click()
    driver.find_element(By.XPATH, "//button[normalize-space()='Xác nhận']").click()
    driver.find_element(By.ID, "passcode").send_keys(passcode)
    driver.find_element(By.XPATH, "//button[normalize-space()='Tiếp tục']").click()


def pick_year(driver: WebDriver, year: int) -> None:
    """Choose a year in the picker and wait until its answer is on the screen."""
    Select(driver.find_element(By.ID, "nam")).select_by_value(str(year))
    driver.find_element(By.XPATH, "//button[normalize-space()='Xem']").click()
    wait_for(driver, "#lich-su", f"năm {year}")


def open_visit(driver: WebDriver, visit_code: str) -> None:
    """Open one visit of the list and wait until its detail (or refusal) is on the screen."""
    driver.find_element(By.CSS_SELECTOR, f"a[href*='/{visit_code}?']").click()
    wait_for(driver, "h1", "Lượt khám")


def wait_for(driver: WebDriver, css: str, text: str, timeout: float = 60.0) -> None:
    """Wait until an element matching css shows text (a reply can take a moment to come back over Kafka)."""
    def shows(d: WebDriver) -> bool:
        # read every match's text in one script: element handles taken while the previous page unloads go
        # stale between finding and reading them, which Chromium reports as an inspector error, not as stale
        try:
            texts = d.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css)
        except WebDriverException:  # between two documents: the next poll reads the new one
            return False
        return any(text in shown for shown in texts or ())

    WebDriverWait(driver, timeout).until(shows, f"no {css} showing {text!r} within {timeout:.0f} s")


def fits_the_screen(driver: WebDriver, width: int = PHONE_WIDTH) -> bool:
    """Whether the page is laid out for the phone's width and readable without scrolling sideways."""
    return driver.execute_script(
        "return window.innerWidth === arguments[0] && document.documentElement.scrollWidth <= arguments[0]", width)


def unlabelled_fields(driver: WebDriver) -> list[str]:
    """Form fields a screen reader could not name: no label[for], no wrapping label, no aria-label."""
    return driver.execute_script("""
        return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
          .filter(f => !(f.labels && f.labels.length) && !f.getAttribute('aria-label'))
          .map(f => f.outerHTML);""")


def low_contrast(driver: WebDriver, least: float = 4.5) -> list[str]:
    """Visible texts whose colour against their background is below WCAG AA's ratio (4.5:1)."""
    return driver.execute_script("""
        const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
        const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
          .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
        const background = el => { for (; el; el = el.parentElement) {
            const c = rgb(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
        const failing = [];
        for (const el of document.querySelectorAll('body *')) {
          const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
          if (!own || !el.offsetParent && el.tagName !== 'BODY') continue;
          const a = lum(rgb(getComputedStyle(el).color).slice(0, 3)), b = lum(background(el));
          const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
          if (ratio < arguments[0]) failing.push(el.tagName + ' ' + ratio.toFixed(2) + ': ' + el.textContent.trim());
        }
        return failing;""", least)


def sign_in_by_keyboard(driver: WebDriver, base: str, personal_id: str, level: int) -> None:
    """Sign in with the keyboard alone: type the ID, Tab to the account level, arrows to choose, Enter."""
    driver.get(base + "/")
    field = driver.find_element(By.ID, "personal_id")
    field.click()
    field.send_keys(personal_id, Keys.TAB)
    if level == 1:
        driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    driver.switch_to.active_element.send_keys(Keys.TAB)
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(driver, "h1", "Hồ sơ sức khỏe")


def foreign_assets(driver: WebDriver) -> list[str]:
    """Stylesheets, scripts, images and fonts the page would load from anywhere but its own server."""
    return driver.execute_script("""
        const own = location.origin;
        return performance.getEntriesByType('resource').map(e => e.name).filter(u => !u.startsWith(own));""")


def screenshot(driver: WebDriver, path: Path) -> None:
    """Save the whole page, its full height at the phone's width, as a PNG."""
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
