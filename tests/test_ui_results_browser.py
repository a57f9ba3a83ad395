"""The results view in a real headless browser, against ``stoic serve``.

The daemon runs on the local backend with the stand-in function (no TensorFlow: the
labels are the file names' stems, ``--label-from-name``), with ``api.token`` set. A
batch of two deployments is sent through the API, one of its files named
``<img src=x onerror=alert(1)>.jpg`` (so its label is that markup too). Debian's
Chromium then logs in, opens the batch and its results view, and checks that the
thumbnails are drawn, that the hostile name and label are text (an alert would stop the
driver), that the filters narrow the cards, that the download buttons answer with the
page's session, and that the console holds no error.

Skipped where no Chromium or chromedriver is installed (:mod:`tests.support.browser`;
``CI_REQUIRE_BROWSER=1`` turns the skip into a failure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import console_errors, require_browser, start_chrome
from tests.support.client import submit, wait_state
from tests.support.images import camera_image
from tests.support.processes import Serving
from tests.support.settings import standin_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "results-browser-token"
HOSTILE = "<img src=x onerror=alert(1)>.jpg"
FILES = {
    f"cam1/{HOSTILE}": camera_image(1),
    "cam1/coyote-1.jpg": camera_image(2, captured="2024:05:02 05:00:00"),
    "cam2/coyote-2.jpg": camera_image(3),
    "cam2/heron-3.jpg": camera_image(4, captured=None),
}


def click_and_load(driver: Any, element: Any) -> None:
    """Click ``element`` and wait for the page it leads to (the old one goes stale)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    html = driver.find_element("tag name", "html")
    element.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(html))


def test_results_view_in_a_real_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    require_browser()
    config = standin_config(
        tmp_path, tmp_path / "data", '"--label-from-name"', extra=f'\n[api]\ntoken = "{TOKEN}"\n'
    )
    with Serving(tmp_path, config) as daemon:
        daemon.start()
        with httpx.Client(
            base_url=daemon.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as api:
            batch_id = submit(api, FILES.items())
            body = wait_state(api, batch_id, timeout_s=60, log=daemon.log)
            assert body["state"] == "done", body

        profile = tmp_path / "chrome"
        profile.mkdir()
        driver = start_chrome(profile)
        try:
            driver.get(f"{daemon.url}/ui/login")
            driver.find_element(By.CSS_SELECTOR, "form.login input[name=token]").send_keys(TOKEN)
            click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "form.login button"))
            driver.get(f"{daemon.url}/ui/batches/{batch_id}")
            click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "a.results-view"))

            def cards() -> dict[str, Any]:
                return {
                    c.find_element(By.CSS_SELECTOR, ".file").text: c
                    for c in driver.find_elements(By.CSS_SELECTOR, "li.card")
                }

            shown = cards()
            assert set(shown) == set(FILES)
            hostile = shown[f"cam1/{HOSTILE}"]
            assert hostile.find_element(By.CSS_SELECTOR, "dd.label").text == HOSTILE[:-4]
            assert hostile.find_element(By.CSS_SELECTOR, "dd.deployment").text == "cam1"
            assert hostile.find_element(By.CSS_SELECTOR, "dd.score").text == "0.75"
            assert hostile.find_element(By.CSS_SELECTOR, "dd.runtime").text == "edge"
            captured = shown["cam1/coyote-1.jpg"].find_element(By.CSS_SELECTOR, "dd.captured")
            assert captured.text == "2024-05-02T05:00:00"
            # Four thumbnails drawn, and no other image: nothing became markup.
            drawn = driver.execute_script(
                "return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight,"
                " i.src.slice(0, 23)])"
            )
            assert drawn == [[48, 36, "data:image/jpeg;base64,"]] * 4
            assert driver.execute_script(
                "return Array.from(document.scripts).map(s => s.getAttribute('src'))"
            ) == ["/ui/static/ui.js"]

            # Filters: a plain form, its choices kept on the next page.
            Select(driver.find_element(By.NAME, "label")).select_by_value("coyote")
            click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button"))
            assert set(cards()) == {"cam1/coyote-1.jpg", "cam2/coyote-2.jpg"}
            Select(driver.find_element(By.NAME, "deployment")).select_by_value("cam2")
            click_and_load(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button"))
            assert set(cards()) == {"cam2/coyote-2.jpg"}
            assert Select(driver.find_element(By.NAME, "label")).first_selected_option.text == (
                "coyote (2)"
            )

            # The download buttons answer with the page's session (no bearer token).
            answers = driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "Promise.all(Array.from(document.querySelectorAll('a.button')).map(a =>"
                " fetch(a.href).then(r => [a.dataset.format, r.status,"
                " r.headers.get('content-type'), r.headers.get('content-disposition')])))"
                ".then(done);"
            )
            by_format = {a[0]: a[1:] for a in answers}
            assert set(by_format) == {"megadetector", "camtrap-dp", "csv"}
            assert by_format["csv"][:2] == [200, "text/csv; charset=utf-8"]
            assert by_format["megadetector"][:2] == [200, "application/json"]
            assert by_format["camtrap-dp"][:2] == [200, "application/zip"]
            assert all(batch_id in a[2] and "attachment" in a[2] for a in by_format.values())

            assert console_errors(driver) == []
        finally:
            driver.quit()
