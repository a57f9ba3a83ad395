"""The cloud path, run for real: a batch placed on a cloud runtime, in each Kubernetes
mode, is uploaded to S3, read by a real pod, labelled, and the results come back.

Nothing is injected into the daemon: it builds its Kubernetes backend from settings as
a site would configure it, with a kubeconfig naming the ``kmock`` emulator, the cloud
object store on SeaweedFS (S3 on loopback, ``s3_server``), invocation through the API
server's service proxy, its edge store a directory. The test plays the cluster: the
Secret with the S3 keys is created as an operator would, and the kubelet stand-in
(:mod:`tests.support.kubelet`) runs each pod the backend asks for with the real
function server (TensorFlow on CPU, the demo model trained small once per module by
``stoic model init``), and serves the API server's proxy to it.

Per mode, it must hold that:

* the batch is done on ``cpu``, each image labelled with one of the demo's classes;
* one pod ran, whose process had exactly the container's environment (plus
  ``PYTHONPATH`` where the run has one, see ``ProcessRuntime``): the pod found the
  package and the model through what the backend put in its spec, nothing else, since
  the edge store is a directory its environment never names;
* the package and the model are in the cloud bucket, put there by the controller;
* the S3 secret key is in no object the backend created (the pod got it by reference);
* after the batch, the backend's objects are gone and the pod's process has stopped.

Variants: ``process`` (the container's command as a local process) always; ``podman``
(the built function image) where ``make images`` built it, skipped otherwise; CI runs it
after ``make images`` with ``STOIC_E2E_REQUIRE_IMAGE=1``, which makes a missing image
a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import kmock as km
import pytest
import yaml

from stoic.api.app import create_app
from stoic.daemon.controller import Controller
from stoic.function.classifier import CLASSES
from stoic.settings import Settings
from stoic.storage.package import model_key, package_key
from tests.support.images import scene_jpeg
from tests.support.kubelet import (
    Kubelet,
    PodmanRuntime,
    ProcessRuntime,
    secret,
)
from tests.support.net import free_port
from tests.support.paths import REPO
from tests.support.s3 import S3Server
from tests.support.settings import make_settings

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.timeout(600)]

NS = "stoic-e2e"
IMAGE = "localhost/stoic-function-cpu:0.1.0"
MODES = ["deployment", "knative", "kubeless"]
LABELS = ["bird", "fox", "empty"]


@pytest.fixture(scope="module")
def model_objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An edge object store holding the demo model, trained small by the real CLI."""
    objects = tmp_path_factory.mktemp("edge-objects")
    out = subprocess.run(
        [sys.executable, "-m", "stoic.cli", "model", "init", "--store-dir", str(objects),
         "--per-class", "4", "--epochs", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return objects


@pytest.fixture(params=["process", "podman"])
def container_runtime(request: pytest.FixtureRequest) -> ProcessRuntime | PodmanRuntime:
    if request.param == "process":
        return ProcessRuntime()
    podman = PodmanRuntime()
    why = podman.missing(IMAGE)
    if why is not None:
        if os.environ.get("STOIC_E2E_REQUIRE_IMAGE") == "1":
            pytest.fail(f"STOIC_E2E_REQUIRE_IMAGE=1 but {why}")
        pytest.skip(why)
    return podman


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "edge-token"}}],
                "contexts": [{"name": "cloud", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "cloud",
            }
        )
    )
    return path


def cloud_settings(
    tmp_path: Path, mode: str, emulator: km.KubernetesEmulator, s3: S3Server, bucket: str
) -> Settings:
    """One cloud runtime on Kubernetes in ``mode``, as a site's stoic.toml would say."""
    return make_settings(
        tmp_path,
        runtimes=[
            {"name": "edge", "kind": "edge", "backend": "local"},  # a daemon needs one
            {"name": "cpu", "kind": "cpu", "backend": "kubernetes"},
        ],
        predictor={"deploy_timeout_s": 240},
        kubernetes={
            "mode": mode,
            "namespace": NS,
            "kubeconfig": kubeconfig(tmp_path / "kubeconfig", str(emulator.url).rstrip("/")),
            "invoke_via": "proxy",
            "controller_id": "e2e",
            "image_cpu": IMAGE,
            "service_port": free_port(),
            "ready_poll_s": 0.5,
            "invoke_timeout_s": 300,
            "store": {
                "endpoint": s3.endpoint,
                "bucket": bucket,
                "access_key": s3.access_key,
                "secret_key": s3.secret_key,
                "credentials_secret": "stoic-s3",
            },
        },
    )


async def create(emulator: km.KubernetesEmulator, path: str, body: dict[str, Any]) -> None:
    async with emulator.post(path, json=body) as resp:
        assert resp.status < 300, await resp.text()


async def wait_done(client: httpx.AsyncClient, batch_id: str, kubelet: Kubelet) -> Any:
    async with asyncio.timeout(420):
        while True:
            kubelet.check()
            body = (await client.get(f"/v1/batches/{batch_id}")).json()
            if body["state"] in ("done", "failed"):
                return body
            await asyncio.sleep(0.5)


@pytest.mark.parametrize("mode", MODES)
async def test_a_batch_on_a_cloud_runtime_is_labelled_by_a_real_pod(
    mode: str,
    kmock: km.KubernetesEmulator,
    s3_server: S3Server,
    model_objects: Path,
    container_runtime: ProcessRuntime | PodmanRuntime,
    tmp_path: Path,
) -> None:
    bucket = f"cloud-{mode}-{os.getpid()}"
    settings = cloud_settings(tmp_path, mode, kmock, s3_server, bucket)
    shutil.copytree(model_objects, settings.objects_path)
    keys = {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key}
    await create(kmock, f"/api/v1/namespaces/{NS}/secrets", secret(NS, "stoic-s3", keys))

    ctl = Controller(settings)
    app = create_app(settings, controller=ctl)
    kubelet = Kubelet(kmock, NS, mode, container_runtime, tmp_path / "pods")
    images = [(f"cam/{label}-{i}.jpg", scene_jpeg(label, i)) for i, label in enumerate(LABELS)]
    async with (
        kubelet,
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        files = [("files", (name, data, "image/jpeg")) for name, data in images]
        r = await client.post("/v1/batches", files=files, data={"runtime": "cpu"})
        assert r.status_code == 202, r.text
        batch_id = r.json()["id"]
        batch = await wait_done(client, batch_id, kubelet)
        assert batch["state"] == "done", f"{batch}\n{kubelet.logs()}"
        assert batch["decision"]["runtime"] == "cpu"
        results = {x["name"]: x for x in batch["results"]}
        assert set(results) == {name for name, _ in images}
        assert all(x["error"] is None and x["label"] in CLASSES for x in results.values())

        # The backend tears the pod down once the batch is done.
        [pod] = kubelet.pods.values()
        async with asyncio.timeout(30):
            await pod.gone.wait()
        live = [key for key, obj in kmock.objects.items() if not obj.deleted]
        assert [name for (_res, _ns, name) in live] == ["stoic-s3"], live

    assert pod.ready and pod.container is not None
    assert pod.container.exit_code() is not None
    # The pod had the object store from its spec, with the keys resolved from the Secret.
    assert pod.env["STOIC_OBJECTSTORE__KIND"] == "s3"
    assert pod.env["STOIC_OBJECTSTORE__S3_BUCKET"] == bucket
    assert pod.env["STOIC_OBJECTSTORE__S3_SECRET_KEY"] == s3_server.secret_key
    if isinstance(container_runtime, ProcessRuntime):
        expected = dict(pod.env)
        if "PYTHONPATH" in os.environ:
            expected["PYTHONPATH"] = os.environ["PYTHONPATH"]
        assert pod.environ == expected  # nothing inherited
    made = [obj.last.raw for obj in kmock.objects.values()]
    created = json.dumps([raw for raw in made if raw["kind"] != "Secret"])
    assert s3_server.secret_key not in created
    cloud = s3_server.store(bucket).list("")
    assert package_key(batch_id) in cloud
    assert model_key("classify", "1") in cloud
