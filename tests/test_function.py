"""The serverless function end to end through a directory object store.

TensorFlow is slow to import and train, so one demo model is trained per session and
shared; every test stays small. Throughput is measured in benchmarks/bench_function.py,
not here.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from stoic.errors import FunctionError, InputError, ModelNotFound, ObjectNotFound
from stoic.storage.objectstore import DirObjectStore
from stoic.storage.package import PackageWriter, model_key, package_key
from tests.support.function import TIMINGS
from tests.support.net import free_port

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytestmark = pytest.mark.slow

MODEL = model_key("classify", "1")


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory store holding one small trained demo model (shared by the session)."""
    from stoic.function.classifier import save_model, train_demo_model

    root = tmp_path_factory.mktemp("objects")
    result = train_demo_model(n_per_class=20, epochs=3, seed=1)
    save_model(result.model, DirObjectStore(root), MODEL, result.classes)
    return root


@pytest.fixture
def store(store_root: Path) -> DirObjectStore:
    return DirObjectStore(store_root)


@pytest.fixture(scope="session")
def shared_function(store_root: Path):
    """One Function with the model already loaded (a warm pod)."""
    from stoic.function.handler import Function

    function = Function(DirObjectStore(store_root))
    function.get_model(MODEL)
    return function


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="PNG")
    return buf.getvalue()


def _put_package(store: DirObjectStore, batch: str, members: list[tuple[str, bytes]]) -> str:
    buf = io.BytesIO()
    with PackageWriter(buf) as writer:
        for name, data in members:
            writer.add_bytes(name, data)
    key = package_key(batch)
    store.put_bytes(key, buf.getvalue())
    return key


def _demo_members(n_per_class: int, seed: int) -> list[tuple[str, bytes]]:
    from stoic.function.classifier import demo_images

    return [
        (f"{i:03d}-{label}.jpg", data)
        for i, (label, data) in enumerate(demo_images(n_per_class, seed=seed))
    ]


def test_classifies_jpeg_and_png_and_reports_bad_files(store, shared_function) -> None:
    members = [
        *_demo_members(2, seed=7),  # 10 JPEG scenes of known class
        ("grey.png", _png((128, 128, 128))),
        ("truncated.jpg", _demo_members(1, seed=8)[0][1][:200]),
        ("notes.txt", b"this is not an image"),
    ]
    key = _put_package(store, "b-mixed", members)
    out = shared_function({"action": "classify", "package": key, "model": MODEL})
    assert out["n_images"] == 13
    assert out["n_failed"] == 2
    by_name = {r["name"]: r for r in out["results"]}
    assert [r["name"] for r in out["results"]] == [n for n, _ in members]
    for name in ("truncated.jpg", "notes.txt"):
        assert by_name[name]["label"] is None and by_name[name]["scores"] == {}
        assert "cannot decode image" in by_name[name]["error"]
    classes = {"bird", "fox", "rodent", "human", "empty"}
    for r in out["results"]:
        if r["error"] is None:
            assert r["label"] in classes
            assert set(r["scores"]) == classes
            assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
            assert r["label"] == max(r["scores"], key=r["scores"].get)
    assert [r["index"] for r in out["results"]] == list(range(13))
    (worker,) = out["workers"]
    assert worker["device"] == "CPU:0" and worker["images"] == 11
    assert worker["batches"] == -(-11 // worker["batch_size"])
    assert set(out["timings"]) == TIMINGS
    assert out["timings"]["model_load_s"] == 0.0  # the shared function is warm
    json.dumps(out)  # the response is plain JSON


def test_warmup_then_cached_model(store) -> None:
    from stoic.function.handler import Function

    key = _put_package(store, "b-warm", _demo_members(1, seed=3))
    function = Function(store)  # a cold pod
    first = function({"package": key, "model": MODEL, "warmup": True})
    assert first["n_images"] == 1  # warm-up classifies the first image only
    assert first["timings"]["model_load_s"] > 0
    second = function({"package": key, "model": MODEL, "batch_size": 2})
    assert second["n_images"] == 5
    assert second["timings"]["model_load_s"] == 0.0
    function.drop_models()
    third = function({"package": key, "model": MODEL, "warmup": True})
    assert third["timings"]["model_load_s"] > 0


def test_missing_package_and_model_are_typed(store, shared_function) -> None:
    with pytest.raises(ObjectNotFound) as info:
        shared_function({"package": "batches/none/package.tar", "model": MODEL})
    assert info.value.key == "batches/none/package.tar"
    key = _put_package(store, "b-nomodel", _demo_members(1, seed=4)[:1])
    with pytest.raises(ModelNotFound) as minfo:
        shared_function({"package": key, "model": "models/classify/9/model.keras"})
    assert minfo.value.key == "models/classify/9/model.keras"
    assert "models/classify/9/model.keras" in str(minfo.value)


@pytest.mark.parametrize(
    "body",
    [
        {"package": "batches/x/package.tar"},  # no model
        {"package": "../etc/passwd", "model": MODEL},
        {"action": "dance", "package": "a", "model": "b"},
        {"package": "a", "model": "b", "batch_size": 0},
        {"package": "a", "model": "b", "start": -1},
        {"package": "a", "model": "b", "start": 5, "stop": 5},
        {"package": "a", "model": "b", "stop": 0},
        b"{not json",
    ],
)
def test_bad_requests(shared_function, body) -> None:
    with pytest.raises(InputError):
        shared_function(body)


def test_chunked_calls_merge_into_the_whole_call(store, shared_function) -> None:
    """The share mode's chunks: members by range, each result naming its member and
    package index; merged, they are the one-call results (scores to float noise)."""
    extra = [(f"z-{name}", data) for name, data in _demo_members(1, seed=10)]
    members = [*_demo_members(3, seed=9), ("bad.txt", b"x"), *extra]
    key = _put_package(store, "b-chunks", members)
    whole = shared_function({"package": key, "model": MODEL})["results"]
    merged: list[dict] = []
    for start in range(0, len(members), 6):
        stop = min(start + 6, len(members))
        out = shared_function({"package": key, "model": MODEL, "start": start, "stop": stop})
        assert [r["index"] for r in out["results"]] == list(range(start, stop))
        merged.extend(out["results"])
    assert [(r["name"], r["index"], r["label"], r["error"]) for r in merged] == [
        (r["name"], r["index"], r["label"], r["error"]) for r in whole
    ]
    for a, b in zip(merged, whole, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    tail = shared_function({"package": key, "model": MODEL, "start": 18})
    assert [r["name"] for r in tail["results"]] == [n for n, _ in members[18:]]
    one = shared_function({"package": key, "model": MODEL, "start": 4, "warmup": True})
    assert [r["index"] for r in one["results"]] == [4]
    with pytest.raises(InputError, match="beyond the package's 21 members"):
        shared_function({"package": key, "model": MODEL, "start": 15, "stop": 22})
    with pytest.raises(InputError, match="beyond the package's 21 members"):
        shared_function({"package": key, "model": MODEL, "start": 21})


def test_batch_size_is_measured_at_load_or_fixed(store) -> None:
    from stoic.function.handler import Function
    from stoic.settings import FunctionSettings

    tuned = Function(store, settings=FunctionSettings(batch_candidates=[2, 8], tune_budget_s=0.1))
    loaded, load_s = tuned.get_model(MODEL)
    rates = loaded.devices.tuning["CPU:0"]
    # 8 is skipped if a call of 2 took over budget/20 (a loaded machine): both are right.
    assert 2 in rates and set(rates) <= {2, 8} and all(r > 0 for r in rates.values())
    assert loaded.devices.batch_sizes["CPU:0"] in rates
    assert set(loaded.load_s) == {"read_s", "replicate_s", "trace_s", "tune_batch_s", "gc_s"}
    assert load_s >= sum(loaded.load_s.values()) * 0.99
    fixed = Function(store, settings=FunctionSettings(batch_size=3, freeze_gc=False))
    key = _put_package(store, "b-fixed", _demo_members(2, seed=13))
    out = fixed({"package": key, "model": MODEL})
    assert out["workers"][0]["batch_size"] == 3 and out["workers"][0]["batches"] == 4
    assert fixed({"package": key, "model": MODEL, "batch_size": 7})["workers"][0]["batches"] == 2
    fixed.close()
    with pytest.raises(FunctionError, match=r"\['GPU:7'\] not visible"):
        Function(store, settings=FunctionSettings(devices=["CPU:0", "GPU:7"])).get_model(MODEL)


def test_kubeless_handler_reads_settings_from_env(store_root, monkeypatch) -> None:
    from stoic.function import handler as mod

    monkeypatch.setenv("STOIC_OBJECTSTORE__KIND", "dir")
    monkeypatch.setenv("STOIC_OBJECTSTORE__PATH", str(store_root))
    monkeypatch.setattr(mod, "_default", None)
    key = _put_package(DirObjectStore(store_root), "b-kubeless", _demo_members(1, seed=5)[:2])
    event = {"data": {"action": "classify", "package": key, "model": MODEL}, "event-id": "1"}
    out = mod.handler(event, {"function-name": "classify", "timeout": "180"})
    assert out["n_images"] == 2 and out["n_failed"] == 0
    assert isinstance(mod._default, mod.Function)
    assert mod._default.store.root == store_root.resolve()  # type: ignore[attr-defined]


def test_train_on_labelled_images_beats_chance(store, shared_function) -> None:
    from stoic.function.classifier import demo_images

    # Unbalanced like camera traps: few foxes and humans, so up-sampling has work to do.
    counts = [40, 15, 40, 15, 40]
    for i, (label, data) in enumerate(demo_images(counts, seed=11)):
        store.put_bytes(f"train/{label}/{i:04d}.jpg", data)
    store.put_bytes("train/empty/broken.jpg", b"not an image")
    out = shared_function(
        {
            "action": "train",
            "images": "train",
            "output": "models/classify/2/model.keras",
            "epochs": 10,
            "val_fraction": 0.25,
        }
    )
    assert out["model"] == "models/classify/2/model.keras"
    assert store.exists("models/classify/2/model.keras")
    assert out["n_train"] == 5 * 30  # every class up-sampled to the largest (40 * 0.75)
    assert out["skipped"] and "broken.jpg" in out["skipped"][0]
    assert len(out["history"]["accuracy"]) == 10
    assert out["val_accuracy"] > 0.4  # chance is 0.2 on five classes
    # The new version serves.
    key = _put_package(store, "b-v2", _demo_members(1, seed=12))
    res = shared_function({"package": key, "model": "models/classify/2/model.keras"})
    assert res["n_images"] == 5 and res["n_failed"] == 0


@pytest.fixture
def server_url(store_root: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "STOIC_OBJECTSTORE__KIND": "dir",
        "STOIC_OBJECTSTORE__PATH": str(store_root),
        "FUNC_PORT": str(port),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stoic.function.server", "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks until the server says it is ready (or exits)
            if "ready on" in line or "failed" in line:
                break
        assert "ready on" in line, line
        assert httpx.get(f"{url}/healthz").status_code == 200
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


def test_http_server_routes(server_url: str, store: DirObjectStore) -> None:
    key = _put_package(store, "b-http", [*_demo_members(1, seed=6)[:3], ("x.txt", b"x")])
    with httpx.Client(base_url=server_url, timeout=60) as client:
        r = client.post("/", json={"action": "classify", "package": key, "model": MODEL})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["n_images"] == 4 and body["n_failed"] == 1
        assert body["timings"]["model_load_s"] > 0  # a fresh process loads the model
        again = client.post("/", json={"package": key, "model": MODEL, "warmup": True}).json()
        assert again["timings"]["model_load_s"] == 0.0 and again["n_images"] == 1

        r = client.post("/", json={"package": "batches/zz/package.tar", "model": MODEL})
        assert r.status_code == 404
        assert r.json()["key"] == "batches/zz/package.tar"
        r = client.post("/", json={"package": key, "model": "models/none/1/model.keras"})
        assert r.status_code == 404 and r.json()["key"] == "models/none/1/model.keras"
        r = client.post("/", content=b"{oops", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = client.post("/", json={"package": key, "model": MODEL, "start": 1, "stop": 3})
        assert r.status_code == 200
        assert [(x["name"], x["index"]) for x in r.json()["results"]] == [
            ("001-fox.jpg", 1),
            ("002-rodent.jpg", 2),
        ]
        r = client.post("/", json={"package": key, "model": MODEL, "start": 2, "stop": 9})
        assert r.status_code == 400 and "beyond the package's 4 members" in r.json()["error"]
        r = client.post("/", json={"package": key, "model": MODEL, "start": 3, "stop": 1})
        assert r.status_code == 400 and "stop (1) must be greater than start (3)" in r.text

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'stoic_function_calls_total{action="classify",status="404"} 2.0' in metrics.text
        assert 'stoic_function_calls_total{action="classify",status="400"} 2.0' in metrics.text
        assert "stoic_function_images_total 7.0" in metrics.text
        assert client.get("/nope").status_code == 404


def test_demo_scenes_are_deterministic_and_decodable() -> None:
    from stoic.function.classifier import CLASSES, decode_image, demo_images

    a, b = demo_images(1, seed=2), demo_images(1, seed=2)
    assert a == b and [label for label, _ in a] == list(CLASSES)
    x = decode_image(a[0][1])
    assert x.shape == (64, 64, 3) and x.dtype == np.uint8
    with pytest.raises(InputError):
        decode_image(b"\x89PNG\r\n\x1a\n broken")


def test_fine_tune_keeps_classes_and_rejects_unknown_labels(store, shared_function) -> None:
    from stoic.function.classifier import demo_images

    for i, (label, data) in enumerate(demo_images(3, seed=21)):
        store.put_bytes(f"ft/{label}/{i}.jpg", data)
    body = {"action": "train", "images": "ft/", "base_model": MODEL, "epochs": 1}
    out = shared_function({**body, "output": "models/classify/ft/model.keras"})
    assert out["classes"] == ["bird", "fox", "rodent", "human", "empty"]
    assert len(out["history"]["loss"]) == 1
    store.put_bytes("ft/bear/0.jpg", demo_images(1, seed=22)[0][1])
    with pytest.raises(InputError, match="bear"):
        shared_function({**body, "output": "models/classify/ft2/model.keras"})
    with pytest.raises(ObjectNotFound):
        shared_function({**body, "images": "nothing-here", "output": "models/x/1/model.keras"})


def test_model_init_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stoic.cli import app

    args = ["model", "init", "--store-dir", str(tmp_path), "--version", "7"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--per-class", "4", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "demo model" in result.output
    assert DirObjectStore(tmp_path).exists("models/classify/7/model.keras")
    again = runner.invoke(app, [*args, "--if-missing"])
    assert again.exit_code == 0 and "nothing to do" in again.output


_TWO_DEVICES = """
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
from stoic.function.handler import Function
from stoic.storage.objectstore import DirObjectStore
from stoic.settings import FunctionSettings

store = DirObjectStore(sys.argv[1])
request = {"package": sys.argv[2], "model": sys.argv[3]}
two = Function(store, settings=FunctionSettings(devices=["CPU:0", "CPU:1"], batch_size=4))
loaded, _ = two.get_model(sys.argv[3])
one = Function(store, settings=FunctionSettings(devices=["CPU:0"], batch_size=4))
print(json.dumps({
    "logical": [d.name for d in tf.config.list_logical_devices("CPU")],
    "weights_on": {d: m.weights[0].value.device for d, m in loaded.devices.replicas.items()},
    "two": two(request),
    "one": one(request),
}))
"""


def test_two_logical_devices_share_the_queue(store, store_root: Path) -> None:
    """The multi-GPU path (a replica and a worker per device, one shared source) on two
    logical CPU devices, in a child process (logical devices must be set before
    TensorFlow starts)."""
    key = _put_package(store, "b-two", _demo_members(8, seed=14))
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_DEVICES, str(store_root), key, MODEL],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["logical"]) == 2
    assert out["weights_on"]["CPU:0"].endswith("CPU:0")
    assert out["weights_on"]["CPU:1"].endswith("CPU:1")
    two, one = out["two"], out["one"]
    images = {w["device"]: w["images"] for w in two["workers"]}
    assert set(images) == {"CPU:0", "CPU:1"} and sum(images.values()) == 40
    assert images["CPU:0"] > 0 and images["CPU:1"] > 0
    assert [r["label"] for r in two["results"]] == [r["label"] for r in one["results"]]
    for a, b in zip(two["results"], one["results"], strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_tune_batch_size_picks_the_smallest_near_the_best() -> None:
    import time

    import tensorflow as tf

    from stoic.function.workers import tune_batch_size

    def per_call(x: np.ndarray) -> np.ndarray:  # a fixed cost per call: big batches win
        time.sleep(0.01)
        return x

    no_cut = {"budget_s": 0.3, "max_call_s": float("inf")}
    size, rates = tune_batch_size(per_call, 2, [1, 4, 16], tolerance=0.2, **no_cut)
    assert size == 16 and set(rates) == {1, 4, 16} and rates[16] > 4 * rates[1]

    def per_image(x: np.ndarray) -> np.ndarray:  # cost per image only: all sizes equal
        time.sleep(0.02 * len(x))
        return x

    size, _ = tune_batch_size(per_image, 2, [2, 4, 8], tolerance=0.3, **no_cut)
    assert size == 2

    def small_memory(x: np.ndarray) -> np.ndarray:
        if len(x) >= 8:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating")
        time.sleep(0.005)
        return x

    size, rates = tune_batch_size(small_memory, 2, [16, 2, 4, 8], tolerance=0.1, **no_cut)
    assert set(rates) == {2, 4} and size == 4

    def slow_from_8(x: np.ndarray) -> np.ndarray:  # the ladder stops after the first slow size
        if len(x) >= 8:
            time.sleep(0.2)
        return x

    size, rates = tune_batch_size(
        slow_from_8, 2, [2, 4, 8, 16, 32], budget_s=0.5, tolerance=0.1, max_call_s=0.1
    )
    assert set(rates) == {2, 4, 8}
