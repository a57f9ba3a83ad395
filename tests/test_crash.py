"""Crash safety with real processes: ``kill -9`` the daemon while batches are queued
and running, restart it, and every accepted batch completes exactly once.

The runtimes are local processes, but running the stand-in function server
``tests/standin_function.py`` (the local backend's ``local.command`` setting) that
sleeps a little per call instead of loading TensorFlow, so the test is quick and
independent of TF. It lists the package it is given, so the results name the images
as the real function does.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from stoic.store import Store
from stoic.values import BatchState
from tests.support.images import jpeg
from tests.support.net import tail
from tests.support.processes import Serving, stop
from tests.support.settings import standin_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N_BATCHES = 4


def finished_events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "batch finished" and event.get("logger") == "stoic.controller":
                out.append(event)
    return out


def test_kill_9_then_restart_completes_every_batch_exactly_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = standin_config(
        tmp_path,
        data,
        '"--batch-delay", "1.5"',
        extra='\n[[runtimes]]\nname = "cpu"\nkind = "cpu"\nprior_deploy_s = 100.0\n',
    )
    with Serving(tmp_path, config) as serving:
        daemon = serving.start()
        ids = []
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
            for i in range(N_BATCHES):
                r = client.post(
                    "/v1/batches",
                    files=[
                        ("files", (f"b{i}-{k}.jpg", jpeg(i * 10 + k), "image/jpeg"))
                        for k in range(2)
                    ],
                )
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            # Kill while one batch runs and the others wait in the queue.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                running = client.get("/v1/batches", params={"state": "running"}).json()["batches"]
                if running:
                    break
                time.sleep(0.05)
            assert running, tail(serving.log)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)

        with Store(f"sqlite:///{data / 'stoic.db'}") as store:
            states = {b: store.get_batch(b).state for b in ids}
        assert BatchState.RUNNING in states.values()
        assert BatchState.QUEUED in states.values()
        interrupted = [b for b, s in states.items() if s is BatchState.RUNNING]

        second = serving.start()
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = client.get("/v1/batches", params={"state": "done"}).json()["batches"]
                if len(done) == N_BATCHES:
                    break
                time.sleep(0.2)
            bodies = [client.get(f"/v1/batches/{b}").json() for b in ids]
        assert [b["state"] for b in bodies] == ["done"] * N_BATCHES, tail(serving.log)
        for i, b in enumerate(bodies):
            assert sorted(x["name"] for x in b["results"]) == [f"b{i}-0.jpg", f"b{i}-1.jpg"]
        assert stop(second) == 0

    # Exactly once: one "finished" event per batch over both lives of the daemon, one
    # results object each, and the interrupted batch was claimed a second time.
    events = finished_events(serving.log)
    assert sorted(str(e["batch_id"]) for e in events) == sorted(ids)
    assert all(e["state"] == "done" for e in events)
    assert "re-queued batches left running by a previous run" in serving.log.read_text()
    with Store(f"sqlite:///{data / 'stoic.db'}") as store:
        for b in ids:
            record = store.get_batch(b)
            assert record.state is BatchState.DONE
            assert record.attempts == (2 if b in interrupted else 1)
    results = sorted((data / "objects" / "batches").glob("*/results.json"))
    assert len(results) == N_BATCHES
