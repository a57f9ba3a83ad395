"""Operator-page sessions and login throttling (issue 26, defect 10).

The daemon runs in-process on a :class:`~stoic.clock.ManualClock`, so expiry and
back-off are tested by moving time, not by sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from stoic.api.ui import session
from stoic.api.ui.session import Sessions
from stoic.api.ui.throttle import Backoff, LoginThrottle, client_key
from stoic.clock import ManualClock
from tests.support.daemon import Daemon, start_daemon
from tests.support.settings import make_settings

TOKEN = "s3cret-token"
ORIGIN = {"Origin": "http://stoic"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def locked(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Daemon]:
    """A daemon with ``api.token`` and default ``ui`` settings, on ``clock``; its client
    sends no credentials."""
    async with start_daemon(make_settings(tmp_path, api={"token": TOKEN}), clock=clock) as d:
        yield d


async def login(client: httpx.AsyncClient) -> str:
    """Log ``client`` in; the session id its cookie holds."""
    r = await client.post("/ui/login", data={"token": TOKEN}, headers=ORIGIN)
    assert r.status_code == 303, r.text
    value = client.cookies.get(session.COOKIE)
    assert value
    return value


async def with_cookie(d: Daemon, value: str, path: str = "/ui") -> int:
    """The status of ``path`` for a request carrying only the cookie ``value``."""
    async with d.client_from("127.0.0.9") as other:
        r = await other.get(path, headers={"Cookie": f"{session.COOKIE}={value}"})
        return r.status_code


# Sessions ------------------------------------------------------------------------------


async def test_logout_revokes_the_session(locked: Daemon) -> None:
    """Logout ends the session on the server: the old cookie, replayed, gets 401. Before
    the fix the cookie was an HMAC of the token and stayed valid after logout."""
    mine = await login(locked.client)
    async with locked.client_from("127.0.0.2") as colleague:
        theirs = await login(colleague)
        assert await with_cookie(locked, mine) == 200

        out = await locked.client.post("/ui/logout", headers=ORIGIN)
        assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
        assert await with_cookie(locked, mine) == 401
        assert await with_cookie(locked, mine, "/ui/fragments/status") == 401
        # Another login is another session: it goes on.
        assert (await colleague.get("/ui")).status_code == 200
        assert await with_cookie(locked, theirs) == 200


async def test_a_new_login_replaces_the_session_it_came_with(locked: Daemon) -> None:
    first = await login(locked.client)
    second = await login(locked.client)
    assert second != first
    assert await with_cookie(locked, first) == 401
    assert await with_cookie(locked, second) == 200


async def test_a_session_idle_past_the_timeout_is_refused(
    locked: Daemon, clock: ManualClock
) -> None:
    idle = locked.controller.settings.ui.session_idle_s
    value = await login(locked.client)
    clock.advance(idle - 1)
    assert await with_cookie(locked, value) == 200  # used: the idle time starts again
    clock.advance(idle - 1)
    assert await with_cookie(locked, value) == 200
    clock.advance(idle + 1)
    assert await with_cookie(locked, value) == 401
    clock.advance(-idle)  # gone for good, not just too old for now
    assert await with_cookie(locked, value) == 401
    assert (await locked.client.get("/ui")).status_code == 401


async def test_a_session_ends_at_its_lifetime_however_active(
    tmp_path: Path, clock: ManualClock
) -> None:
    settings = make_settings(tmp_path, api={"token": TOKEN}, ui={"session_ttl_s": 3_000.0})
    async with start_daemon(settings, clock=clock) as d:
        value = await login(d.client)
        for _ in range(3):
            clock.advance(1_000)
            assert await with_cookie(d, value) == 200
        clock.advance(1)
        assert await with_cookie(d, value) == 401


def test_sessions_are_bounded_least_recently_used_first_out() -> None:
    s = Sessions(idle_s=100, lifetime_s=1_000, capacity=2)
    a = s.open(0.0)
    b = s.open(1.0)
    assert s.use(a, 2.0)  # b is now the least recently used
    c = s.open(3.0)
    assert len(s) == 2
    assert s.use(a, 4.0) and s.use(c, 4.0) and not s.use(b, 4.0)
    assert s.revoke(a) and not s.revoke(a) and not s.use(a, 5.0)
    # Expired sessions make room before a live one is pushed out.
    d = s.open(200.0)
    assert len(s) == 1 and s.use(d, 200.0)


# Throttling ----------------------------------------------------------------------------


async def test_wrong_tokens_are_throttled_with_growing_backoff(
    locked: Daemon, clock: ManualClock
) -> None:
    """After ``login_free_failures`` wrong tokens a client waits, the wait doubling with
    each further wrong one; while it waits even the right token gets 429 with
    Retry-After. Before the fix every attempt was answered at once (300 in 4.5 s)."""
    ui = locked.controller.settings.ui
    c = locked.client

    async def attempt(token: str) -> httpx.Response:
        return await c.post("/ui/login", data={"token": token}, headers=ORIGIN)

    for _ in range(ui.login_free_failures):
        assert (await attempt("wrong")).status_code == 401
    waits: list[int] = []
    wait = ui.login_backoff_s
    while wait <= ui.login_backoff_max_s:
        r = await attempt("wrong")
        assert r.status_code == 401 and "wrong token" in r.text
        throttled = await attempt(TOKEN)
        assert throttled.status_code == 429
        assert "try again in" in throttled.text
        assert "set-cookie" not in throttled.headers
        waits.append(int(throttled.headers["retry-after"]))
        clock.advance(wait - 0.5)
        assert (await attempt("wrong")).status_code == 429  # not yet, and not counted
        clock.advance(0.5)
        wait *= 2
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert (await attempt("wrong")).status_code == 401
    assert (await attempt("wrong")).headers["retry-after"] == str(int(ui.login_backoff_max_s))

    # Another client is not held back by this one's guesses.
    async with locked.client_from("192.0.2.7") as other:
        assert (await other.post("/ui/login", data={"token": "x"})).status_code == 401
        assert (await other.post("/ui/login", data={"token": TOKEN})).status_code == 303

    # Once the wait is over, the right token logs in and the count starts again.
    clock.advance(ui.login_backoff_max_s)
    assert (await attempt(TOKEN)).status_code == 303
    for _ in range(ui.login_free_failures):
        assert (await attempt("wrong")).status_code == 401


async def test_wrong_bearer_tokens_count_and_fragments_get_a_plain_429(
    locked: Daemon, clock: ManualClock
) -> None:
    ui = locked.controller.settings.ui
    wrong = {"Authorization": "Bearer nope", "X-Stoic-Fragment": "1"}
    for _ in range(ui.login_free_failures + 1):
        r = await locked.client.get("/ui/fragments/status", headers=wrong)
        assert r.status_code == 401
    r = await locked.client.get(
        "/ui/fragments/status", headers={"Authorization": f"Bearer {TOKEN}", **wrong}
    )
    assert (r.status_code, r.text, r.headers["retry-after"]) == (429, "too many wrong tokens", "1")
    clock.advance(ui.login_backoff_s)
    r = await locked.client.get("/ui", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200


def test_failures_are_forgotten_after_a_quiet_spell() -> None:
    t = LoginThrottle(Backoff(free_failures=1, first_s=1.0, max_s=60.0, memory_s=600.0))
    assert t.failed("a", 0.0) == 0.0
    assert t.failed("a", 0.0) == 1.0
    assert t.retry_after_s("a", 0.25) == 0.75
    assert t.failed("a", 10.0) == 2.0
    assert t.retry_after_s("b", 10.0) == 0.0
    assert t.failed("a", 611.0) == 0.0  # 601 s after the last: a fresh start
    t.succeeded("a")
    assert t.retry_after_s("a", 611.0) == 0.0


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(free_failures=3, first_s=1.0, max_s=300.0, memory_s=3_600.0)
    assert [b.wait_s(n) for n in range(1, 14)] == [
        0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300,
    ]  # fmt: skip
    assert b.wait_s(10_000) == 300.0


def test_the_throttle_table_is_bounded() -> None:
    t = LoginThrottle(Backoff(0, 1.0, 60.0, 600.0), capacity=2)
    t.failed("a", 0.0)
    t.failed("b", 0.0)
    t.failed("c", 0.0)
    assert t.retry_after_s("a", 0.0) == 0.0  # the least recently failed went out
    assert t.retry_after_s("b", 0.0) == 1.0 and t.retry_after_s("c", 0.0) == 1.0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_64(host: str | None, key: str) -> None:
    assert client_key(host) == key


def test_a_backoff_cap_below_its_start_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="login_backoff_max_s"):
        make_settings(tmp_path, ui={"login_backoff_s": 60.0, "login_backoff_max_s": 30.0})
