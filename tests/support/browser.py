"""Debian's Chromium driven by Selenium through Debian's chromedriver (nothing is
downloaded at run time), for the operator page's browser tests.

A machine without them skips those tests; ``.ci/run`` installs them and sets
``CI_REQUIRE_BROWSER=1``, which turns the skip into a failure, so that CI cannot pass
by skipping. Selenium is imported only once the browser is known to be there.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
)


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    if CHROMIUM is None:
        return "no chromium binary (apt-get install chromium chromium-driver)"
    if CHROMEDRIVER is None:
        return "no chromedriver (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def require_browser() -> tuple[str, str]:
    """(chromium, chromedriver); skips the test where either is missing, fails it
    there under ``CI_REQUIRE_BROWSER=1``."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CI_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    return CHROMIUM, CHROMEDRIVER


def start_chrome(profile: Path) -> Any:
    """A headless Chromium with its own profile in ``profile`` (the driver's log too),
    keeping the console's messages for :func:`console_errors`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver, log_output=str(profile / "driver.log"))
    return webdriver.Chrome(options=options, service=service)


def console_errors(driver: Any) -> list[str]:
    """The console's errors since the last call: CSP violations, failed requests,
    script errors."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float,
    what: str,
    context: Callable[[], str] | None = None,
) -> Any:
    """The first true value of ``predicate``, polled; fails after ``timeout_s`` naming
    ``what`` (and ``context()``, where given: the page, a log)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{extra}")
        time.sleep(0.25)
