"""Share mode through the daemon on the local backend, with real processes: a 200-image
batch comes back with every image labelled once and the runtime of each; ``kill -9``
mid-batch, restart, and no image is lost or labelled twice in the stored result, and
the images labelled before the kill are not labelled again.

The runtimes are local function processes running the stand-in
(``tests/standin_function.py``) with a per-image delay, so the batch takes seconds, not
TensorFlow's minutes; the daemon, the local backend and the share machinery are real.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.images import jpeg
from tests.support.net import tail
from tests.support.processes import Serving, stop
from tests.support.settings import standin_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N = 200


def config(tmp: Path, data: Path) -> Path:
    return standin_config(
        tmp,
        data,
        '"--image-delay", "0.04"',
        edge_per_image_s=0.04,
        extra="""
[policy]
share_min_gain_s = 0.5

[[runtimes]]
name = "cpu"
kind = "cpu"
prior_deploy_s = 0.5
prior_per_image_s = 0.04
prior_fixed_s = 0.1
""",
    )


def submit(client: httpx.Client) -> str:
    files = [("files", (f"img{k:03d}.jpg", jpeg(k), "image/jpeg")) for k in range(N)]
    r = client.post("/v1/batches", files=files, data={"mode": "share"})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait_done(client: httpx.Client, batch_id: str, log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        b = client.get(f"/v1/batches/{batch_id}").json()
        if b["state"] in ("done", "failed"):
            assert b["state"] == "done", b.get("error")
            return dict(b)
        time.sleep(0.2)
    raise AssertionError(f"batch not done; log:\n{tail(log)}")


def calls(call_log: Path, batch_id: str) -> list[tuple[int, int]]:
    if not call_log.exists():
        return []
    out = []
    for line in call_log.read_text().splitlines():
        _, package, a, b = line.split()
        if batch_id in package:
            out.append((int(a), int(b)))
    return out


def test_share_batch_labels_each_image_once_across_a_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = config(tmp_path, data)
    call_log = tmp_path / "calls"
    with Serving(tmp_path, cfg, STANDIN_CALLLOG=str(call_log)) as serving:
        daemon = serving.start()
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=60) as client:
            # 1. A whole share batch: every image once, with the runtime that labelled it.
            first = submit(client)
            b = wait_done(client, first, serving.log)
            results = b["results"]
            assert isinstance(results, list)
            assert sorted(r["index"] for r in results) == list(range(N))
            assert sorted(r["name"] for r in results) == [f"img{k:03d}.jpg" for k in range(N)]
            runtimes = {r["runtime"] for r in results}
            assert runtimes == {"edge", "cpu"}, b.get("decision")

            # 2. Kill -9 once some chunks are stored, while the batch still runs.
            second_id = submit(client)
            chunks = data / "objects" / "batches" / second_id / "chunks"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(list(chunks.glob("*.json"))) < 2:
                time.sleep(0.02)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        stored = list(chunks.glob("*.json"))
        assert stored, tail(serving.log)
        before: set[int] = set()
        for f in stored:
            doc = json.loads(f.read_text())
            before |= set(range(doc["start"], doc["stop"]))
        assert 0 < len(before) < N
        calls_before = len(calls(call_log, second_id))

        second = serving.start()
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=60) as client:
            b = wait_done(client, second_id, serving.log)
        results = b["results"]
        assert isinstance(results, list)
        indices = [r["index"] for r in results]
        assert sorted(indices) == list(range(N)) and len(set(indices)) == N
        assert all(r["runtime"] for r in results)
        # What was stored before the kill was not labelled again after the restart.
        after = calls(call_log, second_id)[calls_before:]
        relabelled = {i for a, z in after for i in range(a, z)} & before
        assert not relabelled, sorted(relabelled)
        assert "share: resuming" in serving.log.read_text()
        assert stop(second) == 0
