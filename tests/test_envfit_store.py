"""``stoic env fit --store`` on a store a real daemon wrote: ``stoic serve`` on the local
backend (stand-in function processes), with the inquisitor probing the cloud runtime
and batches pinned to the edge and to the cloud, then the fit of its database."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stoic.backends.simulated import EnvSpec
from stoic.store import Store
from tests.support.images import jpeg
from tests.support.net import tail
from tests.support.paths import REPO, STAND_IN
from tests.support.processes import Serving, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROBES = 10


def _config(tmp: Path, data: Path) -> Path:
    config = tmp / "stoic.toml"
    config.write_text(
        f"""
data_dir = "{data}"

[controller]
inquisitor = true
bootstrap = false
demo_model = false
drain_grace_s = 5

[inquisitor]
period_s = 0.3
processing_probe_period_s = 0

[local]
command = ["{sys.executable}", "{STAND_IN}", "--no-model-check", "--image-delay", "0.01"]
probe_period_s = 0.3  # the stand-ins' probes every tick, not hourly: the fit needs samples

[[runtimes]]
name = "edge"
kind = "edge"
prior_per_image_s = 0.01
prior_fixed_s = 0.1

[[runtimes]]
name = "cpu"
kind = "cpu"
prior_deploy_s = 0.5
prior_per_image_s = 0.01
prior_fixed_s = 0.1
"""
    )
    return config


def test_fit_of_a_store_written_by_a_daemon(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'stoic.db'}"
    with Serving(tmp_path, _config(tmp_path, data)) as serving:
        daemon = serving.start()
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=60) as client:
            ids = []
            for i, n in enumerate((1, 2, 3, 4, 5, 6, 7, 8)):
                files = [
                    ("files", (f"b{i}-{k}.jpg", jpeg(10 * i + k), "image/jpeg")) for k in range(n)
                ]
                pin = "edge" if i % 2 else "cpu"
                r = client.post("/v1/batches", files=files, data={"runtime": pin})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                states = [client.get(f"/v1/batches/{b}").json()["state"] for b in ids]
                with Store(url) as store:
                    probes = store.count_deployment_samples("cpu")
                if all(s == "done" for s in states) and probes >= PROBES:
                    break
                time.sleep(0.3)
            assert all(s == "done" for s in states), tail(serving.log)
            assert probes >= PROBES, tail(serving.log)
        assert stop(daemon) == 0

    with Store(url) as store:
        deployments = store.count_deployment_samples("cpu")
        cpu_runs = store.count_processing_samples(runtime="cpu")
        edge_runs = store.count_processing_samples(runtime="edge")
    out = tmp_path / "site.yaml"
    r = subprocess.run(
        [sys.executable, "-m", "stoic.cli", "env", "fit", "--store", url, "--prior",
         str(REPO / "workload" / "nautilus-2020.yaml"), "--out", str(out), "--report",
         str(tmp_path / "report"), "--no-progress"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    spec = EnvSpec.load(out)
    assert spec.name == "site"
    header = out.read_text().split("\nname:")[0]
    assert f"# Source:  {url}" in header
    assert f"deployments: cpu {deployments}" in header
    assert f"processing: cpu {cpu_runs}, edge {edge_runs}" in header
    assert f"fitted, {deployments} completed deployments" in header
    assert "runtimes.edge.processing.per_image_s" in header
    assert "fitted, 4 runs over 4 batch sizes" in header  # the edge's pinned batches
    # The daemon deploys a local process in well under a second: the fit says so, where
    # the prior's cpu median is 38 s.
    assert spec.runtimes["cpu"].deployment is not None
    assert spec.runtimes["cpu"].deployment.median_s < 10
    # Runtimes the daemon does not have stay the prior's, and the header says it.
    assert "runtimes.gpu1: prior, whole (no measurements of it)" in header
    assert (tmp_path / "report" / "qq_T_d.png").exists()
