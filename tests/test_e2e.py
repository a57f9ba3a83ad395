"""End to end: the real daemon as a subprocess, real JPEGs over HTTP, real TensorFlow.

One daemon start (TensorFlow is slow to import on a 2-core machine) on embedded
defaults — SQLite and a directory object store in a temporary data dir, local
runtimes, no model stored (so the daemon trains the demo model) — restricted to the
edge and one cloud runtime, without the inquisitor, to keep it to a few minutes.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from stoic.function.classifier import CLASSES, draw_scene
from stoic.store import Store
from stoic.values import BatchState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scene_jpeg(label: str, seed: int) -> bytes:
    buf = io.BytesIO()
    draw_scene(label, np.random.default_rng(seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def wait_for(client: httpx.Client, path: str, timeout_s: float, log: Path) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = client.get(path)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{path} not ready in {timeout_s} s; log:\n{log.read_text()[-4000:]}")


def test_daemon_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "stoic.toml"
    config.write_text(
        """
[controller]
inquisitor = false

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
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOIC_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stoic.cli", "serve", "--config", str(config),
             "--port", str(port), "--data-dir", str(data)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            wait_for(client, "/healthz", 120, log)
            wait_for(client, "/readyz", 120, log)

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

            deadline = time.monotonic() + 600
            while True:
                b = client.get(f"/v1/batches/{batch_id}").json()
                if b["state"] in ("done", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert b["state"] == "done", f"{b}\n{log.read_text()[-4000:]}"
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
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    text = log.read_text()
    assert rc == 0, text[-4000:]
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
