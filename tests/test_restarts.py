"""Restarts that are not the batch's fault do not fail it: one share batch through five
``kill -9``s and five SIGTERMs of ``stoic serve``, each after the batch stored a new
chunk, with the default ``controller.max_attempts`` (3). It finishes with every image
exactly once, its ``shares`` add up to its results, and no chunk object is left.

A drain (SIGTERM, with a grace shorter than the batch) hands the batch back to the
queue without counting the run; a crash after new chunks counts as progress. Before,
the third such restart failed the batch ("gave up after 3 attempt(s)") with its chunk
objects orphaned. The runtimes are local processes running the stand-in function
(``tests/standin_function.py``) with a per-image delay; everything else is real.
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

N = 300
RESTARTS = ("kill", "term") * 5


def config(tmp: Path, data: Path) -> Path:
    """Edge and a CPU runtime sharing at 20 ms an image, in small chunks (a sixteenth of
    the time left), so that each life of the daemon stores a chunk or two."""
    return standin_config(
        tmp,
        data,
        '"--image-delay", "0.02"',
        edge_per_image_s=0.02,
        extra="""
[policy]
share_min_gain_s = 0.1

[share]
chunk_factor = 16
min_chunk_s = 0.1

[[runtimes]]
name = "cpu"
kind = "cpu"
prior_deploy_s = 0.5
prior_per_image_s = 0.02
prior_fixed_s = 0.1
""",
    )


def labelled(chunks: Path) -> set[int]:
    """The images whose results are stored in chunk objects now."""
    out: set[int] = set()
    for f in chunks.glob("*.json"):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out |= set(range(doc["start"], doc["stop"]))
    return out


def test_a_share_batch_survives_five_kill_9s_and_five_sigterms(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Serving(tmp_path, config(tmp_path, data), STOIC_CONTROLLER__DRAIN_GRACE_S="0.2") as s:
        daemon = s.start()
        with httpx.Client(base_url=s.url, trust_env=False, timeout=60) as client:
            files = [("files", (f"img{k:03d}.jpg", jpeg(k), "image/jpeg")) for k in range(N)]
            r = client.post("/v1/batches", files=files, data={"mode": "share"})
            assert r.status_code == 202, r.text
            batch_id = str(r.json()["id"])
        chunks = data / "objects" / "batches" / batch_id / "chunks"
        for how in RESTARTS:
            # This life's run stores a chunk of its own (a drained run may have stored
            # some after the last look), then the daemon goes.
            before = labelled(chunks)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not labelled(chunks) - before:
                time.sleep(0.01)
            now = labelled(chunks)
            assert now - before, f"no new chunk before the {how}; log:\n{tail(s.log)}"
            assert len(now) < N, "the batch finished before the restarts were over"
            if how == "kill":
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(timeout=30)
            else:
                assert stop(daemon) == 0
            daemon = s.start()

        with httpx.Client(base_url=s.url, trust_env=False, timeout=60) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                batch = client.get(f"/v1/batches/{batch_id}").json()
                if batch["state"] in ("done", "failed"):
                    break
                time.sleep(0.1)
        assert batch["state"] == "done", f"{batch.get('error')}; log:\n{tail(s.log)}"
        assert stop(daemon) == 0

    results = batch["results"]
    assert sorted(r["index"] for r in results) == list(range(N))  # every image, once
    assert sorted(r["name"] for r in results) == [f"img{k:03d}.jpg" for k in range(N)]
    document = json.loads((data / "objects" / "batches" / batch_id / "results.json").read_text())
    assert sum(document["shares"].values()) == N, document["shares"]
    assert not chunks.exists() or not list(chunks.iterdir())
    log = s.log.read_text()
    assert log.count('"share: resuming"') == len(RESTARTS)
    assert "batch cancelled by the drain; handed back to the queue" in log
    assert batch["attempts"] == 1
