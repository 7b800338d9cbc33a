"""The `browser` fixture shared by the browser tests (tests/browser_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import CHROMIUM, DRIVER, start_browser

pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e .[dev]")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium/chromedriver missing: make setup-browser")
    driver = start_browser()
    yield driver
    driver.quit()
