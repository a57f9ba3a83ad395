"""The operator page in a real headless browser, against a real daemon.

``stoic serve`` runs as a subprocess on the local backend (the real function server with
TensorFlow; a small demo model is trained first with ``stoic model init``), with
``api.token`` set. Debian's Chromium, driven by Selenium through Debian's chromedriver
(nothing is downloaded at run time), then:

1. meets the login form (the page refuses it without the token), logs in;
2. finds the batch submitted through the API, with its runtime, opens it and reads its
   per-image labels; a file name holding ``<script>`` is shown as text;
3. sees the runtime charts drawn (SVG with data marks and a size on screen);
4. submits a second batch through the upload form and watches its page refresh itself
   (the fetch-and-swap script) until the batch is done;
5. logs no console error (CSP violations, failed requests, script errors).

Then, against a second daemon on the stand-in function, the operator's buttons: drain and
resume, a runtime out of service and back, cancel a running batch, retry a failed one
(each checked through the API too; the forms' CSRF refusals are in tests/test_ui_actions.py).

Skipped only where no Chromium or chromedriver is installed (:mod:`tests.support.browser`;
``CI_REQUIRE_BROWSER=1`` turns the skip into a failure).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stoic.function.classifier import CLASSES
from tests.support.browser import console_errors, require_browser, start_chrome, wait_until
from tests.support.client import submit
from tests.support.images import scene_jpeg
from tests.support.net import free_port, wait_for
from tests.support.paths import REPO, STAND_IN
from tests.support.processes import daemon_env, serve, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.usefixtures("browser")]

TOKEN = "field-station-token"
XSS_API = "<script>window.stoicXss=1</script>.jpg"
XSS_FORM = "<img src=x onerror=window.stoicXss=2><script>window.stoicXss=3<script>.jpg"


@pytest.fixture(scope="module")
def browser() -> None:
    """Skips (or fails) every test here where no browser is installed, before any
    daemon starts (``pytestmark`` asks for it first)."""
    require_browser()


def write_config(tmp: Path, prior_deploy_s: float, extra: str = "") -> Path:
    """A settings file with the token, no background work, the page refreshing every
    second (no render cache) and two runtimes, the edge and a CPU pod whose prior T_d
    is ``prior_deploy_s``; ``extra`` is appended (more sections)."""
    config = tmp / "stoic.toml"
    config.write_text(
        f"""
[api]
token = "{TOKEN}"

[controller]
inquisitor = false
bootstrap = false
demo_model = false

[ui]
refresh_s = 1
render_cache_s = 0

[[runtimes]]
name = "edge"
kind = "edge"

[[runtimes]]
name = "cpu"
kind = "cpu"
prior_deploy_s = {prior_deploy_s}
{extra}"""
    )
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``stoic serve`` on the local backend with a token; yields (url, tmp dir)."""
    tmp = tmp_path_factory.mktemp("ui-browser")
    data = tmp / "data"
    env = daemon_env(TF_CPP_MIN_LOG_LEVEL="2")
    # A small demo model, trained in a child process (TensorFlow stays out of pytest).
    subprocess.run(
        [sys.executable, "-m", "stoic.cli", "model", "init", "--store-dir",
         str(data / "objects"), "--per-class", "12", "--epochs", "2"],
        cwd=REPO, env=env, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    config = write_config(tmp, prior_deploy_s=10.0)
    port = free_port()
    log = tmp / "daemon.log"
    proc = serve(config, port, log, env, "--data-dir", str(data))
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(
            base_url=url,
            timeout=60,
            trust_env=False,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            wait_for(client, "/healthz", 120, log, proc)
            wait_for(client, "/readyz", 180, log, proc)
        yield url, tmp
    finally:
        stop(proc)


def test_operator_page_in_a_real_browser(served: tuple[str, Path]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, tmp = served
    api = httpx.Client(
        base_url=url, timeout=60, trust_env=False, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    anonymous = httpx.Client(base_url=url, timeout=60, trust_env=False)

    # A batch through the API, pinned to the cloud runtime so that it deploys.
    images = [
        ("cam1/bird-0.jpg", scene_jpeg("bird", 0)),
        (XSS_API, scene_jpeg("fox", 1)),
        ("cam1/human-2.jpg", scene_jpeg("human", 2)),
    ]
    r = api.post(
        "/v1/batches",
        files=[("files", (name, data, "image/jpeg")) for name, data in images],
        data={"runtime": "cpu"},
    )
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    body = wait_until(
        lambda: (
            (b := api.get(f"/v1/batches/{batch_id}").json())["state"] in ("done", "failed") and b
        ),
        600,
        "the API batch to finish",
    )
    assert body["state"] == "done", body
    labels = {x["name"]: x["label"] for x in body["results"]}

    # Without the token the page refuses, whatever is asked.
    for path in ("/ui", "/ui/fragments/batches", f"/ui/batches/{batch_id}"):
        assert anonymous.get(path).status_code == 401, path
    assert anonymous.post("/ui/batches", files={"files": ("a.jpg", b"x")}).status_code == 401

    profile = tmp / "chrome-profile"
    profile.mkdir()
    driver = start_chrome(profile)
    try:
        # 1. The login form, then the page.
        driver.get(f"{url}/ui")
        token_input = driver.find_element(By.CSS_SELECTOR, "form.login input[name=token]")
        assert TOKEN not in driver.page_source
        token_input.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_until(
            lambda: driver.find_elements(By.ID, "batches"),
            30,
            "the page after login",
            lambda: driver.page_source,
        )
        # The console so far: only the refused first request (401 before the login).
        before = console_errors(driver)
        assert len(before) == 1 and f"{url}/ui " in before[0] and "401" in before[0], before
        cookie = driver.get_cookie("stoic_ui")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"] and TOKEN not in driver.page_source

        # 2. The batch, where it ran, and its labels on its own page.
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-batch="{batch_id}"]')
        assert row.get_attribute("data-runtime") == "cpu"
        assert row.find_element(By.CSS_SELECTOR, "td.runtime").text == "cpu"
        assert "pinned by the user to cpu" in row.text

        # 3. The runtime charts are drawn: data marks, and a size on screen.
        cpu = driver.find_element(By.CSS_SELECTOR, 'article[data-runtime="cpu"]')
        deploy_svg, accuracy_svg = cpu.find_elements(By.CSS_SELECTOR, "svg.chart")
        for svg, series in ((deploy_svg, ["ok"]), (accuracy_svg, ["predicted", "actual"])):
            assert svg.size["width"] > 100 and svg.size["height"] > 50
            for name in series:
                marks = svg.find_elements(By.CSS_SELECTOR, f'g[data-series="{name}"] circle')
                assert marks and all(m.size["width"] > 0 for m in marks), name

        click(driver, f'tr[data-batch="{batch_id}"] a')  # the part may have refreshed since
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "table.results"), 30, "results")
        cells = driver.find_elements(By.CSS_SELECTOR, "table.results tbody tr")
        shown = {
            c.find_element(By.CSS_SELECTOR, "td.file").text: c.find_element(
                By.CSS_SELECTOR, "td.label"
            ).text
            for c in cells
        }
        assert shown == labels and set(shown.values()) <= set(CLASSES)
        assert XSS_API in shown  # the name is text, not markup
        assert_no_injection(driver)

        # 4. The upload form, and the batch page refreshing itself until it is done.
        driver.get(f"{url}/ui#upload")
        upload = tmp / "upload"
        upload.mkdir()
        path = upload / XSS_FORM
        path.write_bytes(scene_jpeg("rodent", 7))
        driver.find_element(By.CSS_SELECTOR, "form.upload input[type=file]").send_keys(str(path))
        Select(
            driver.find_element(By.CSS_SELECTOR, "form.upload select[name=mode]")
        ).select_by_value("selector")
        driver.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
        wait_until(lambda: "/ui/batches/" in driver.current_url, 30, "the new batch's page")
        new_id = driver.current_url.rsplit("/", 1)[1]
        wait_until(
            lambda: driver.find_elements(By.CSS_SELECTOR, "#batch [data-final]"),
            600,
            "the batch page to refresh itself to a finished state",
        )
        assert "/ui/batches/" + new_id in driver.current_url  # refreshed in place, no reload
        state = driver.find_element(By.CSS_SELECTOR, "#batch h2 .badge").text
        assert state == "done", driver.find_element(By.ID, "batch").text
        file_cell = driver.find_element(By.CSS_SELECTOR, "table.results td.file")
        assert file_cell.text == XSS_FORM
        assert driver.find_element(By.CSS_SELECTOR, "table.results td.label").text in CLASSES
        assert_no_injection(driver)

        # The overview lists both, newest first, and refreshes on its own.
        driver.get(f"{url}/ui")
        ids = [
            tr.get_attribute("data-batch")
            for tr in driver.find_elements(By.CSS_SELECTOR, "tr[data-batch]")
        ]
        assert ids == [new_id, batch_id]
        stamp = driver.find_element(By.CSS_SELECTOR, "#status .updated").text
        wait_until(
            lambda: driver.find_element(By.CSS_SELECTOR, "#status .updated").text != stamp,
            30,
            "the status part to refresh",
        )

        # 5. No console errors: no CSP violation, no failed request, no script error.
        assert console_errors(driver) == []
    finally:
        driver.quit()
        api.close()
        anonymous.close()


def assert_no_injection(driver: Any) -> None:
    """Nothing from a file name became an element or ran."""
    scripts = driver.execute_script(
        "return Array.from(document.scripts).map(s => s.getAttribute('src'))"
    )
    assert scripts == ["/ui/static/ui.js"]
    assert driver.execute_script("return document.querySelectorAll('main img').length") == 0
    assert driver.execute_script("return typeof window.stoicXss") == "undefined"


# The operator's actions, clicked -------------------------------------------------------
#
# A second daemon, on the stand-in function (no TensorFlow: a call takes IMAGE_DELAY_S
# per image, so a batch runs long enough to be cancelled), with the token. No model is
# stored at first, so the first batch fails (the stand-in checks the model's key); the
# fixture then stores one and later batches run.

IMAGE_DELAY_S = 10.0


@pytest.fixture(scope="module")
def ops_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``stoic serve`` on the stand-in; yields (url, the id of a failed batch)."""
    tmp = tmp_path_factory.mktemp("ui-actions")
    data = tmp / "data"
    standin = f'"{sys.executable}", "{STAND_IN}", "--image-delay", "{IMAGE_DELAY_S}"'
    local = f"[local]\ncommand = [{standin}]\n"
    config = write_config(tmp, prior_deploy_s=100.0, extra=local)
    port = free_port()
    log = tmp / "daemon.log"
    proc = serve(config, port, log, daemon_env(), "--data-dir", str(data))
    url = f"http://127.0.0.1:{port}"
    try:
        with api_client(url) as api:
            wait_for(api, "/readyz", 120, log, proc)
            failed = submit_images(api, 1)
            body = wait_until(lambda: finished(api, failed), 120, "the first batch to fail")
            assert body["state"] == "failed", body
            model = data / "objects" / "models" / "classify" / "1" / "model.keras"
            model.parent.mkdir(parents=True, exist_ok=True)
            model.write_bytes(b"a model the stand-in only looks for")
        yield url, failed
    finally:
        stop(proc)


def api_client(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, timeout=60, trust_env=False, headers={"Authorization": f"Bearer {TOKEN}"}
    )


def submit_images(api: httpx.Client, n: int) -> str:
    return submit(api, [(f"cam1/{i}.jpg", scene_jpeg("bird", i)) for i in range(n)])


def finished(api: httpx.Client, batch_id: str) -> dict[str, Any] | None:
    b: dict[str, Any] = api.get(f"/v1/batches/{batch_id}").json()
    return b if b["state"] in ("done", "failed", "cancelled") else None


@pytest.fixture(scope="module")
def operator(
    ops_served: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """Chromium, logged in to the stand-in daemon's page."""
    from selenium.webdriver.common.by import By

    url, _ = ops_served
    profile = tmp_path_factory.mktemp("chrome-actions")
    driver = start_chrome(profile)
    try:
        driver.get(f"{url}/ui/login")
        driver.find_element(By.CSS_SELECTOR, "form.login input[name=token]").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_until(lambda: driver.find_elements(By.ID, "batches"), 30, "the page after login")
        yield driver
        assert console_errors(driver) == []
    finally:
        driver.quit()


def click(driver: Any, selector: str) -> None:
    """Click the element; found again if the page's refresh swapped it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_until(clicked, 30, f"a click on {selector}")


def shown(driver: Any, selector: str) -> str:
    """The element's text ("" if there is none), read at once (a refresh may swap it)."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector
    )
    return str(text).strip()


def test_drain_and_resume_by_button(ops_served: tuple[str, str], operator: Any) -> None:
    url, _ = ops_served
    operator.get(f"{url}/ui")
    click(operator, 'button[data-action="drain"]')
    wait_until(
        lambda: shown(operator, 'dd[data-drained="true"]').startswith("drained since"),
        30,
        "the page to say it is drained",
    )
    with api_client(url) as api:
        drained = api.get("/v1/drain").json()
        assert drained["drained"] and drained["by"].startswith("session ")
        waiting = submit_images(api, 1)
        assert api.get(f"/v1/batches/{waiting}").json()["state"] == "queued"
        click(operator, 'button[data-action="undrain"]')
        wait_until(lambda: shown(operator, 'dd[data-drained="false"]'), 30, "resumed")
        assert not api.get("/v1/drain").json()["drained"]
        body = wait_until(lambda: finished(api, waiting), 120, "the held batch to run")
        assert body["state"] == "done", body


def test_a_runtime_out_of_service_and_back_by_button(
    ops_served: tuple[str, str], operator: Any
) -> None:
    from selenium.webdriver.common.by import By

    url, _ = ops_served
    operator.get(f"{url}/ui")
    card = 'article[data-runtime="cpu"]'
    operator.find_element(By.CSS_SELECTOR, f"{card} input[name=reason]").send_keys("fan failed")
    click(operator, f'{card} button[data-action="out-of-service"]')
    wait_until(
        lambda: operator.find_elements(By.CSS_SELECTOR, f'{card}[data-in-service="false"]'),
        30,
        "the card to show it out of service",
    )
    assert "fan failed" in shown(operator, f"{card} .avail")
    with api_client(url) as api:
        cpu = next(r for r in api.get("/v1/runtimes").json()["runtimes"] if r["name"] == "cpu")
        assert cpu["in_service"] is False and cpu["out_of_service"]["reason"] == "fan failed"
        assert "cpu" not in api.get("/v1/estimate", params={"images": 5}).json()["estimates"]
        click(operator, f'{card} button[data-action="in-service"]')
        wait_until(
            lambda: operator.find_elements(By.CSS_SELECTOR, f'{card}[data-in-service="true"]'),
            30,
            "the card back in service",
        )
        assert "cpu" in api.get("/v1/estimate", params={"images": 5}).json()["estimates"]


def test_cancel_a_running_batch_by_button(ops_served: tuple[str, str], operator: Any) -> None:
    url, _ = ops_served
    with api_client(url) as api:
        batch_id = submit_images(api, 8)  # 80 s of calls: it is still running when clicked
        wait_until(
            lambda: api.get(f"/v1/batches/{batch_id}").json()["state"] == "running",
            60,
            "the batch to run",
        )
        operator.get(f"{url}/ui/batches/{batch_id}")
        click(operator, 'button[data-action="cancel"]')
        wait_until(lambda: shown(operator, "#batch h2 .badge") == "cancelled", 30, "cancelled")
        assert "cancelled by session" in shown(operator, "#batch p.error")
        body = api.get(f"/v1/batches/{batch_id}").json()
        assert body["state"] == "cancelled" and body["results"] is None
        # The edge is free at once (its call was killed): the next batch runs now.
        after = submit_images(api, 1)
        body = wait_until(lambda: finished(api, after), 60, "the next batch")
        assert body["state"] == "done", body


def test_retry_a_failed_batch_by_button(ops_served: tuple[str, str], operator: Any) -> None:
    url, failed = ops_served
    operator.get(f"{url}/ui/batches/{failed}")
    assert shown(operator, "#batch h2 .badge") == "failed"
    click(operator, 'button[data-action="retry"]')
    wait_until(
        lambda: shown(operator, "#batch h2 .badge") == "done",
        120,
        "the retried batch's page to refresh to done",
    )
    with api_client(url) as api:
        body = api.get(f"/v1/batches/{failed}").json()
    assert body["state"] == "done" and body["error"] is None and len(body["results"]) == 1
