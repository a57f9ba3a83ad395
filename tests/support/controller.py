"""A controller's batches without HTTP: a controller started and stopped around a
block, a queued batch put as the ingest leaves it, and bounded waits for what the event
loop will make true."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from stoic.backends.fake import FakeBackend
from stoic.daemon.controller import Controller
from stoic.settings import Settings
from stoic.storage.objectstore import make_object_store
from stoic.storage.package import PackageWriter, package_key
from stoic.store import Store, migrate
from stoic.values import BatchState
from tests.support.images import jpeg


@contextlib.asynccontextmanager
async def started(settings: Settings, backend: FakeBackend) -> AsyncIterator[Controller]:
    """The controller of ``settings`` on ``backend``, started; stopped on the way out."""
    ctl = Controller(settings, backends={"local": backend})
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()


def put_batch(settings: Settings, n_images: int = 2, **kwargs: Any) -> str:
    """A queued batch as the ingest would leave it: package object, then row."""
    migrate(settings.database_url)
    objects = make_object_store(settings)
    buf = io.BytesIO()
    with PackageWriter(buf) as w:
        for i in range(n_images):
            w.add_bytes(f"img{i}.jpg", jpeg(i))
    batch_id = str(uuid.uuid4())
    key = package_key(batch_id)
    objects.put_bytes(key, buf.getvalue())
    with Store(settings.database_url) as store:
        store.create_batch(
            created_at=1.0,
            n_images=n_images,
            n_bytes=len(buf.getvalue()),
            package_key=key,
            batch_id=batch_id,
            **kwargs,
        )
    return batch_id


async def wait_state(ctl: Controller, batch_id: str, *states: BatchState) -> Any:
    async with asyncio.timeout(20):
        while True:
            record = await asyncio.to_thread(ctl.store.get_batch, batch_id)
            if record.state in states:
                return record
            await asyncio.sleep(0.01)


async def until(
    condition: Callable[[], object], what: str = "a condition", timeout_s: float = 20
) -> None:
    """Wait (bounded) for a condition the event loop will make true; fails naming
    ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            for _ in itertools.count():
                if condition():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None
