"""Headless Chromium for the browser tests: where the browser is, the skip rule, waiting."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# In CI (CI=true) a skip fails the run (tests/conftest.py), so a missing browser is an error.
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="chromium/chromedriver missing: make setup-browser"
)


def start_browser() -> Any:
    """Debian's chromium + chromium-driver through Selenium, headless, no proxy."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-proxy-server"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return driver


def wait_until(driver: Any, predicate: Callable[[Any], Any], timeout: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: predicate(d))
