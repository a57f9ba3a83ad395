"""Shared test fixtures.

``no_leftover_tasks`` fails any async test that leaves asyncio tasks running: a
cancelled loser that is not really cancelled is a bug, not noise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REPO = Path(__file__).resolve().parents[1]


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
