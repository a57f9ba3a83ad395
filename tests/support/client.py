"""A ``stoic serve`` child's REST API from a synchronous httpx client: a batch
submitted, and its state waited for.

The wait polls with a deadline and fails with the end of the daemon's log, where the
reason is, rather than hanging until the test's own timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.support.net import tail


def submit(client: httpx.Client, images: Iterable[tuple[str, bytes]], **data: str) -> str:
    """``POST /v1/batches`` of ``images`` (name, JPEG bytes) and form fields ``data``;
    the new batch's id (the answer must be 202)."""
    r = client.post(
        "/v1/batches",
        files=[("files", (name, jpg, "image/jpeg")) for name, jpg in images],
        data=data,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait_state(
    client: httpx.Client,
    batch_id: str,
    *states: str,
    timeout_s: float = 60,
    poll_s: float = 0.05,
    log: Path | None = None,
) -> dict[str, Any]:
    """The batch's body once its state is one of ``states`` (done or failed if none
    are named); fails after ``timeout_s`` with the body and the tail of ``log``."""
    wanted = states or ("done", "failed")
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
        if body["state"] in wanted:
            return body
        if time.monotonic() > deadline:
            extra = f"\n{tail(log)}" if log is not None else ""
            raise AssertionError(f"not {' or '.join(wanted)} in {timeout_s} s: {body}{extra}")
        time.sleep(poll_s)
