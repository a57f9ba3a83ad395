"""End to end: the real daemon as a subprocess, real JPEGs over HTTP, real TensorFlow.

One daemon start (TensorFlow is slow to import on a 2-core machine) on embedded
defaults — SQLite and a directory object store in a temporary data dir, local
runtimes, no model stored (so the daemon trains the demo model) — restricted to the
edge and one cloud runtime, without the inquisitor, to keep it to a few minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stoic.function.classifier import CLASSES
from stoic.store import Store
from stoic.values import BatchState
from tests.support.client import wait_state
from tests.support.images import scene_jpeg
from tests.support.net import free_port, tail, wait_for
from tests.support.paths import REPO
from tests.support.processes import daemon_env, serve, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_daemon_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "stoic.toml"
    config.write_text(
        """
[controller]
inquisitor = false
bootstrap_scope = "all"  # the paper's: cpu too, a real process deployed and torn down

[[runtimes]]
name = "edge"
kind = "edge"
prior_deploy_s = 0.0
prior_per_image_s = 2.3955
prior_fixed_s = 13.6

[[runtimes]]
name = "cpu"
kind = "cpu"
prior_deploy_s = 10.0
prior_per_image_s = 1.3338
prior_fixed_s = 14.91
"""
    )
    log = tmp_path / "daemon.log"
    env = daemon_env()
    proc = serve(config, port, log, env, "--data-dir", str(data))
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            wait_for(client, "/healthz", 120, log, proc)
            wait_for(client, "/readyz", 120, log, proc)

            labels = ["bird", "fox", "human", "empty"]
            images = [
                (f"cam1/{label}-{i}.jpg", scene_jpeg(label, i)) for i, label in enumerate(labels)
            ]
            r = client.post(
                "/v1/batches",
                files=[("files", (name, data, "image/jpeg")) for name, data in images],
            )
            assert r.status_code == 202, r.text
            batch_id = r.json()["id"]
            assert r.headers["location"] == f"/v1/batches/{batch_id}"

            b = wait_state(client, batch_id, timeout_s=600, poll_s=1, log=log)
            assert b["state"] == "done", f"{b}\n{tail(log)}"
            assert b["decision"]["runtime"] in ("edge", "cpu")
            assert set(b["decision"]["estimates"]) == {"edge", "cpu"}
            assert b["measured"]["processing_s"] > 0
            results = {x["name"]: x for x in b["results"]}
            assert set(results) == {name for name, _ in images}
            assert all(x["error"] is None and x["label"] in CLASSES for x in results.values())

            # The CLI against the same daemon: a second batch, waited for.
            imgs = tmp_path / "imgs"
            imgs.mkdir()
            for i in range(3):
                (imgs / f"shot{i}.jpg").write_bytes(scene_jpeg("rodent", 100 + i))
            cli = subprocess.run(
                [sys.executable, "-m", "stoic.cli", "submit", str(imgs), "--url", url,
                 "--wait", "--poll", "0.5"],
                cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            assert ": done (3 images" in cli.stdout
            for i in range(3):
                assert f"shot{i}.jpg\t" in cli.stdout

            runtimes = client.get("/v1/runtimes").json()["runtimes"]
            assert [rt["name"] for rt in runtimes] == ["edge", "cpu"]
            metrics = client.get("/metrics").text
            assert 'stoic_batches{state="done"} 2.0' in metrics
    finally:
        rc = stop(proc)
    text = log.read_text()
    assert rc == 0, tail(log)
    assert "training the demo model" in text and "controller stopped" in text
    assert "bootstrap done" in text

    with Store(f"sqlite:///{data / 'stoic.db'}") as store:
        assert store.count_batches(BatchState.DONE) == 2
        done = store.get_batch(batch_id)
        assert done.results_key is not None and done.total_s is not None
        # Bootstrap (2 per runtime) and the batches themselves left samples behind.
        edge = store.count_processing_samples("classify", "1", "edge")
        cpu = store.count_processing_samples("classify", "1", "cpu")
        assert edge + cpu >= 2 + 2 + 2
        assert cpu >= 2 and edge >= 2
        assert store.count_deployment_samples("cpu") >= 2
