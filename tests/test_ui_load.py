"""The operator page under pollers (issue 26, defect 7): rendered off the event loop,
once for every poller, from indexed queries.

``benchmarks/bench_hostile.py --attack pollers`` measures what twenty pollers cost
ingest on a real daemon; these tests pin down the mechanisms without timing anything.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
from sqlalchemy import event

from stoic.api.ui.render import RenderCache
from stoic.clock import ManualClock
from stoic.errors import StoreError
from stoic.store.store import Store
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.images import jpeg
from tests.support.settings import make_settings

PAGE_TEMPLATES = {"index.html", "_status.html", "_batches.html", "_runtimes.html", "_usage.html"}
STORE_READS = ("batch_counts", "list_batches", "recent_outcomes", "usage_since")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def daemon(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Daemon]:
    async with start_daemon(make_settings(tmp_path), clock=clock) as d:
        yield d


def spy_renders(monkeypatch: pytest.MonkeyPatch, hook: Callable[[str], None]) -> None:
    """Call ``hook(template name)`` in the rendering thread before each render."""
    render = jinja2.Template.render

    def spied(self: jinja2.Template, *args: Any, **kwargs: Any) -> str:
        hook(str(self.name))
        return render(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", spied)


def count_reads(monkeypatch: pytest.MonkeyPatch, store: Store) -> Counter[str]:
    calls: Counter[str] = Counter()
    for name in STORE_READS:
        original = getattr(store, name)

        def counted(*args: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            calls[_name] += 1
            return _f(*args, **kw)

        monkeypatch.setattr(store, name, counted)
    return calls


async def test_the_page_renders_off_the_event_loop(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg(1))))
    batch_id = r.json()["id"]
    await daemon.wait_done(batch_id)
    threads: dict[str, set[int]] = {}

    def hook(name: str) -> None:
        threads.setdefault(name, set()).add(threading.get_ident())

    spy_renders(monkeypatch, hook)
    for path in ("/ui", f"/ui/batches/{batch_id}", f"/ui/fragments/batch/{batch_id}"):
        assert (await daemon.client.get(path)).status_code == 200, path
    on_loop = {name for name, ids in threads.items() if threading.get_ident() in ids}
    assert not on_loop
    assert set(threads) >= PAGE_TEMPLATES | {"batch.html", "_batch.html"}


async def test_uploads_are_answered_while_a_render_is_stuck(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A render that takes long holds a worker thread, not the loop: an upload sent
    meanwhile is accepted before the render ends."""
    loop = asyncio.get_running_loop()
    entered, release = asyncio.Event(), threading.Event()
    first = threading.Lock()

    def hook(name: str) -> None:
        if name in PAGE_TEMPLATES and first.acquire(blocking=False):
            loop.call_soon_threadsafe(entered.set)
            release.wait(3)

    spy_renders(monkeypatch, hook)
    page = asyncio.create_task(daemon.client.get("/ui"))
    try:
        async with asyncio.timeout(10):
            await entered.wait()
        r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg(1))))
        assert r.status_code == 202
        assert not release.is_set() and not page.done()
    finally:
        release.set()
    assert (await page).status_code == 200


async def test_pollers_share_one_render(
    daemon: Daemon, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty pollers at once cost one render of each part and one set of database
    reads; the page's parts serve its fragments too, until ``ui.render_cache_s``."""
    renders: Counter[str] = Counter()
    spy_renders(monkeypatch, lambda name: renders.update([name]))
    reads = count_reads(monkeypatch, daemon.controller.store)

    pages = await asyncio.gather(*(daemon.client.get("/ui") for _ in range(20)))
    assert {p.status_code for p in pages} == {200}
    # One render, each copy given its own session's CSRF token (no cookie came in:
    # each of the twenty was handed an anonymous session).
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    assert len({csrf.sub("", p.text) for p in pages}) == 1
    assert len({m[1] for p in pages for m in csrf.finditer(p.text)}) == 20
    assert reads == dict.fromkeys(STORE_READS, 1)
    assert renders == dict.fromkeys(PAGE_TEMPLATES, 1)
    for part in ("status", "batches", "runtimes", "usage"):
        assert (await daemon.client.get(f"/ui/fragments/{part}")).status_code == 200
    assert reads == dict.fromkeys(STORE_READS, 1)

    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg(1))))
    batch_id = r.json()["id"]
    assert batch_id not in (await daemon.client.get("/ui")).text  # still the shared render
    clock.advance(daemon.controller.settings.ui.render_cache_s)
    page = await daemon.client.get("/ui")
    assert reads["list_batches"] == 2 and renders["index.html"] == 2
    assert f'data-batch="{batch_id}"' in page.text


async def test_a_failed_render_is_not_kept(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    store = daemon.controller.store
    original = store.list_batches

    def broken(*_args: Any, **_kw: Any) -> Any:
        raise StoreError("database sqlite:///x: disk I/O error")

    monkeypatch.setattr(store, "list_batches", broken)
    assert (await daemon.client.get("/ui")).status_code == 503
    monkeypatch.setattr(store, "list_batches", original)
    assert (await daemon.client.get("/ui")).status_code == 200


async def test_the_pages_database_reads_use_indexes(daemon: Daemon) -> None:
    """No read the page makes scans the batches table: each is an index search (or, for
    the counts by state, an index-only scan)."""
    store = daemon.controller.store
    for i in range(30):
        store.create_batch(created_at=1_600_000_000.0 + i, n_images=1, n_bytes=1, package_key="k")
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "batches" in sql:
            statements.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert (await daemon.client.get("/ui")).status_code == 200
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert len(statements) >= len(STORE_READS)
    with store.engine.connect() as conn:
        for sql, params in statements:
            plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
            scans = [p for p in plan if "batches" in p and "INDEX" not in p]
            assert not scans, (sql, plan)


async def test_the_render_cache_shares_expires_and_forgets() -> None:
    clock = ManualClock()
    cache = RenderCache(ttl_s=1.0, clock=clock, max_entries=2)
    renders: Counter[str] = Counter()
    gate = asyncio.Event()

    def render(key: str, fail: bool = False) -> Callable[[], Any]:
        async def go() -> str:
            renders[key] += 1
            await gate.wait()
            if fail:
                raise StoreError("gone")
            return f"{key}{renders[key]}"

        return go

    waiting = [asyncio.create_task(cache.get("a", render("a"))) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == ["a1"] * 5  # one render for all five
    clock.advance(0.9)
    assert await cache.get("a", render("a")) == "a1"
    clock.advance(0.1)
    assert await cache.get("a", render("a")) == "a2"  # stale: rendered again

    with pytest.raises(StoreError):
        await cache.get("b", render("b", fail=True))
    assert await cache.get("b", render("b")) == "b2"  # a failure is not kept

    await cache.get("c", render("c"))
    assert await cache.get("a", render("a")) == "a3"  # two entries at most: "a" went out
