"""Warm pods in a real daemon on the local backend: ``kill -9`` with one up, restart.

``stoic serve`` runs the stand-in function (``tests/standin_function.py``) as its cloud
runtime ``cpu``, with ``keepalive.fixed_s`` long enough that the pod outlives the test's
steps. The second batch is labelled by the process that labelled the first (the warm
pod, no deployment), the pod shows in ``GET /v1/runtimes``, it survives the daemon's
``kill -9`` as an orphan, and the next daemon's start kills it: nothing leaked.
"""

from __future__ import annotations

import os
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

CPU = """
[[runtimes]]
name = "cpu"
kind = "cpu"
prior_deploy_s = 0.1
prior_per_image_s = 0.01
prior_fixed_s = 0.1

[keepalive]
enabled = true
fixed_s = 3600
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


def run_batch(client: httpx.Client, i: int) -> dict[str, object]:
    files = [("files", (f"b{i}-{k}.jpg", jpeg(i * 10 + k), "image/jpeg")) for k in range(2)]
    r = client.post("/v1/batches", files=files)
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, object] = client.get(f"/v1/batches/{batch_id}").json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not finish")


def callers(calllog: Path) -> list[int]:
    """The pids that labelled images, in call order."""
    return [int(line.split()[0]) for line in calllog.read_text().splitlines()]


def test_a_warm_pod_is_reused_shown_and_not_leaked_across_a_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    calllog = tmp_path / "calls"
    config = standin_config(
        tmp_path, data, '"--batch-delay", "0.1"', edge_per_image_s=50.0, extra=CPU
    )
    with Serving(tmp_path, config, STANDIN_CALLLOG=str(calllog)) as serving:
        daemon = serving.start()
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
            first = run_batch(client, 0)
            second = run_batch(client, 1)
            assert (first["state"], second["state"]) == ("done", "done"), tail(serving.log)
            assert (first["runtime"], second["runtime"]) == ("cpu", "cpu")
            runtimes = client.get("/v1/runtimes").json()["runtimes"]
        pid = callers(calllog)[0]
        assert callers(calllog) == [pid, pid]  # the second batch took the warm pod
        cpu = next(r for r in runtimes if r["name"] == "cpu")
        assert len(cpu["warm_pods"]) == 1 and cpu["warm_pods"][0]["keep_alive_s"] == 3600
        assert second["measured"]["deployment_s"] == 0  # type: ignore[index]

        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        assert alive(pid)  # the warm pod outlives its daemon: an orphan

        second_daemon = serving.start()
        assert not alive(pid), tail(serving.log)
        assert "killed function processes left by a previous run" in serving.log.read_text()
        assert stop(second_daemon) == 0
