"""The operator's actions on the page, in-process (fake backend): each button's form
does what the API does, carries the session's CSRF token, and is refused (403) without
it, with a wrong or another session's token, or from another site; a script showing the
bearer token needs none. tests/test_ui_browser.py clicks the same buttons in Chromium."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from stoic.api.ui import session
from stoic.backends.fake import FakeBackend, FakeSpec, InvokeStep
from tests.support.controller import until
from tests.support.daemon import Daemon, files, operator_actions, start_daemon
from tests.support.html import Node, dom
from tests.support.images import jpeg
from tests.support.settings import make_settings

TOKEN = "s3cret-token"
ORIGIN = {"Origin": "http://stoic"}


@pytest.fixture
async def open_daemon(tmp_path: Path):
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    async with start_daemon(make_settings(tmp_path), fake) as d:
        yield d


def form(page: str, action: str) -> Node:
    """The form posting to ``action`` on ``page``."""
    return dom(page).find("form", action=action)


def fields(f: Node) -> dict[str, str]:
    """A form's hidden fields, as a browser would send them."""
    return {i.attrs["name"]: i.attrs.get("value", "") for i in f.find_all("input", type="hidden")}


async def press(client: httpx.AsyncClient, page_path: str, action: str, **extra: str):
    """Load ``page_path``, then submit its form for ``action`` as a browser would."""
    page = await client.get(page_path)
    assert page.status_code == 200, page.text
    data = {**fields(form(page.text, action)), **extra}
    return await client.post(action, data=data, headers=ORIGIN)


async def test_drain_and_resume_from_the_page(
    open_daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "stoic.operator")
    c = open_daemon.client
    r = await press(c, "/ui", "/ui/drain")
    assert (r.status_code, r.headers["location"]) == (303, "/ui#status")
    drained = (await c.get("/v1/drain")).json()
    assert drained["drained"] and drained["by"].startswith("session ")
    status = dom((await c.get("/ui/fragments/status")).text)
    assert status.find("dd", data_drained="true").text().startswith("drained since")
    assert fields(status.find("form", action="/ui/drain"))["drain"] == "off"
    r = await press(c, "/ui", "/ui/drain")
    assert r.status_code == 303 and not (await c.get("/v1/drain")).json()["drained"]
    # The session is named by a hash of its id, never by the id (the cookie's value).
    cookie = c.cookies.get(session.COOKIE)
    assert cookie and cookie not in caplog.text
    handle = session.Sessions.handle(cookie)
    assert [(a["action"], a["by"]) for a in operator_actions(caplog)] == [
        ("drain", f"session {handle}"),
        ("undrain", f"session {handle}"),
    ]


async def test_a_runtime_out_of_service_and_back_from_its_card(open_daemon: Daemon) -> None:
    c = open_daemon.client
    action = "/ui/runtimes/gpu1/service"
    r = await press(c, "/ui", action, reason="fan failed")
    assert (r.status_code, r.headers["location"]) == (303, "/ui#runtimes")
    card = dom((await c.get("/ui/fragments/runtimes")).text).find("article", data_runtime="gpu1")
    assert card.attrs["data-in-service"] == "false"
    assert "out of service since" in card.text() and "fan failed" in card.text()
    rt = next(x for x in (await c.get("/v1/runtimes")).json()["runtimes"] if x["name"] == "gpu1")
    assert rt["in_service"] is False and rt["out_of_service"]["reason"] == "fan failed"
    # The edge's card has no such form: it cannot be taken out.
    runtimes = dom((await c.get("/ui/fragments/runtimes")).text)
    assert not runtimes.find("article", data_runtime="edge").find_all("form")
    r = await press(c, "/ui", action)
    assert r.status_code == 303
    assert open_daemon.controller.availability.in_service("gpu1")


async def test_cancel_then_retry_a_batch_from_its_page(tmp_path: Path) -> None:
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    fake.script_invokes("edge", InvokeStep(3600.0))
    async with start_daemon(make_settings(tmp_path), fake) as d:
        r = await d.client.post("/v1/batches", files=files(("a.jpg", jpeg(1))))
        batch_id = r.json()["id"]
        await until(lambda: fake.ops("invoke", "edge"), "the call on the edge")
        page = f"/ui/batches/{batch_id}"
        r = await press(d.client, page, f"{page}/cancel")
        assert (r.status_code, r.headers["location"]) == (303, page)
        assert fake.ops("invoke-cancelled", "edge") and not fake.live
        shown = dom((await d.client.get(page)).text)
        assert shown.find("span", class_="badge").text() == "cancelled"
        assert "cancelled by session" in shown.find("p", class_="error").text()
        assert not shown.find_all("form", action=f"{page}/cancel")
        r = await press(d.client, page, f"{page}/retry")
        assert r.status_code == 303
        assert (await d.wait_state(batch_id, "done"))["state"] == "done"


async def test_an_action_without_the_sessions_csrf_token_is_refused(open_daemon: Daemon) -> None:
    c = open_daemon.client
    token = fields(form((await c.get("/ui")).text, "/ui/drain"))["csrf"]
    assert token and token not in (c.cookies.get(session.COOKIE) or "")
    async with open_daemon.client_from("127.0.0.7") as other:  # another visitor, own session
        theirs = fields(form((await other.get("/ui")).text, "/ui/drain"))["csrf"]
    assert theirs != token
    for data in (
        {"drain": "on"},  # none
        {"drain": "on", "csrf": ""},
        {"drain": "on", "csrf": token[:-1] + ("A" if token[-1] != "A" else "B")},
        {"drain": "on", "csrf": theirs},  # valid, but another session's
    ):
        r = await c.post("/ui/drain", data=data, headers=ORIGIN)
        assert r.status_code == 403, data
        assert "security token" in r.text
    # The right token, from another site: refused too.
    r = await c.post(
        "/ui/drain", data={"drain": "on", "csrf": token}, headers={"Origin": "http://evil"}
    )
    assert r.status_code == 403
    # No cookie at all (a forged cross-site form on an open daemon): refused.
    async with open_daemon.client_from("127.0.0.8") as stranger:
        r = await stranger.post("/ui/drain", data={"drain": "on", "csrf": token})
        assert r.status_code == 403
    assert (await c.get("/v1/drain")).json()["drained"] is False
    # And with it, accepted.
    r = await c.post("/ui/drain", data={"drain": "on", "csrf": token}, headers=ORIGIN)
    assert r.status_code == 303 and (await c.get("/v1/drain")).json()["drained"]


async def test_with_a_token_actions_need_a_login_or_the_bearer_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api={"token": TOKEN})
    async with start_daemon(settings) as d:
        c = d.client
        r = await c.post("/ui/drain", data={"drain": "on"}, headers=ORIGIN)
        assert r.status_code == 401  # no session, no token
        # A script with the bearer token needs no CSRF token (no browser adds the header).
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        r = await c.post("/ui/drain", data={"drain": "on"}, headers=bearer)
        assert r.status_code == 303
        assert (await c.get("/v1/drain", headers=bearer)).json()["by"] == "token from 127.0.0.1"
        # A browser logs in; its forms carry the login session's token.
        login = await c.post("/ui/login", data={"token": TOKEN}, headers=ORIGIN)
        assert login.status_code == 303
        r = await c.post("/ui/drain", data={"drain": "off"}, headers=ORIGIN)
        assert r.status_code == 403  # logged in, but the form lacks the token
        r = await press(c, "/ui", "/ui/drain")
        assert r.status_code == 303
        assert (await c.get("/v1/drain", headers=bearer)).json()["drained"] is False
        # After logout the old token opens nothing.
        page_token = fields(form((await c.get("/ui")).text, "/ui/drain"))["csrf"]
        await c.post("/ui/logout", headers=ORIGIN)
        r = await c.post("/ui/drain", data={"drain": "on", "csrf": page_token}, headers=ORIGIN)
        assert r.status_code == 401


async def test_a_refused_action_says_why_on_a_page(open_daemon: Daemon) -> None:
    c = open_daemon.client
    token = fields(form((await c.get("/ui")).text, "/ui/drain"))["csrf"]
    r = await c.post(
        "/ui/runtimes/edge/service", data={"in_service": "false", "csrf": token}, headers=ORIGIN
    )
    assert r.status_code == 409 and "falls back to it" in r.text
    assert r.headers["content-type"].startswith("text/html")
    r = await c.post("/ui/batches/nope/cancel", data={"csrf": token}, headers=ORIGIN)
    assert r.status_code == 404
    r = await c.post("/ui/drain", data={"drain": "maybe", "csrf": token}, headers=ORIGIN)
    assert r.status_code == 422
