"""Headless Chromium for the page tests: Debian's chromium and chromedriver, driven by selenium."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WINDOW = (1400, 1000)


def chromium(window: tuple[int, int] = WINDOW) -> Any:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: install Debian's packages `chromium chromium-driver` "
            "(apt-get install chromium chromium-driver; .ci/run does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    # an explicit driver and browser: selenium has nothing to look up or download
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wait_in_page(driver: Any, script: str, timeout: float = 20.0) -> Any:
    """Until `script` (JavaScript run in the page) returns something true; that value."""
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(script)):
        if time.monotonic() > deadline:
            logs = [entry["message"] for entry in driver.get_log("browser")]
            text = driver.execute_script("return document.body.innerText.slice(0, 400);")
            raise AssertionError(f"the page never satisfied: {script}; console: {logs}; text: {text!r}")
        time.sleep(0.2)
    return value
