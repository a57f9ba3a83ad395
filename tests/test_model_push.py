"""Bring your own model: ``stoic model push`` checks a Keras file against its labels and
stores it as a new version; made the default, it labels the next batches.

The models are tiny and trained here (a second each) to answer one label whatever the
image, so the label a batch gets tells which model classified it. The end-to-end test
runs the daemon in-process with the real local backend: the function server is a
TensorFlow process, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from stoic.errors import InputError
from stoic.storage.objectstore import DirObjectStore
from tests.support.paths import REPO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SIZE = 16


def scenes(n: int, seed: int) -> list[tuple[str, bytes]]:
    from stoic.function.classifier import demo_images

    return demo_images(n, seed=seed)[: 5 * n]


def train_constant(path: Path, n_out: int, answer: int, *, size: int = SIZE, seed: int = 0) -> Path:
    """Train a tiny CNN whose every answer is class ``answer``; save it to ``path``."""
    import keras

    from stoic.function.classifier import decode_image

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(size, size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(n_out, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    images = np.stack([decode_image(data, size) for _, data in scenes(4, seed)])
    model.fit(
        images.astype("float32"),
        np.full(len(images), answer),
        epochs=15,
        batch_size=len(images),
        verbose=0,
    )
    fresh = np.stack([decode_image(data, size) for _, data in scenes(2, seed + 100)])
    assert set(np.argmax(model(fresh.astype("float32")), axis=1).tolist()) == {answer}
    model.save(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "zebra": train_constant(root / "zebra.keras", 2, 0),  # labels zebra, okapi
        "oryx": train_constant(root / "oryx.keras", 3, 2, seed=1),  # kudu, eland, oryx
    }


def push(*args: str) -> Any:
    from stoic.cli import app

    return CliRunner().invoke(app, ["model", "push", *args])


# The checks ----------------------------------------------------------------------------


def test_wrong_output_shape_is_one_line_and_stores_nothing(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    store = tmp_path / "objects"
    out = subprocess.run(
        [sys.executable, "-m", "stoic.cli", "model", "push", str(models["oryx"]),
         "--version", "3", "--classes", "cat,dog", "--store-dir", str(store)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("stoic: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr
    assert "output shape" in errors[0] and "(None, 2)" in errors[0]
    assert "['cat', 'dog']" in errors[0] and str(models["oryx"]) in errors[0]
    assert not store.exists() or DirObjectStore(store).list("") == []


def test_push_stores_model_and_labels(tmp_path: Path, models: dict[str, Path]) -> None:
    from stoic.function.classifier import load_model

    store = DirObjectStore(tmp_path)
    r = push(str(models["zebra"]), "--version", "2", "--classes", "zebra, okapi",
             "--store-dir", str(tmp_path))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "stored models/classify/2/model.keras" in r.output
    assert "stoic model default --app classify --version 2" in r.output
    model, classes = load_model(store, "models/classify/2/model.keras")
    assert classes == ["zebra", "okapi"] and model.output_shape == (None, 2)
    assert store.get_bytes("models/classify/2/model.keras") == models["zebra"].read_bytes()

    # A version is pushed once; --replace is explicit.
    again = push(str(models["zebra"]), "--version", "2", "--classes", "zebra,okapi",
                 "--store-dir", str(tmp_path))  # fmt: skip
    assert isinstance(again.exception, InputError)
    assert "already has a model" in str(again.exception)
    replaced = push(str(models["oryx"]), "--version", "2", "--classes", "kudu,eland,oryx",
                    "--store-dir", str(tmp_path), "--replace")  # fmt: skip
    assert replaced.exit_code == 0 and "replaced" in replaced.output
    assert load_model(store, "models/classify/2/model.keras")[1] == ["kudu", "eland", "oryx"]


def test_labels_from_a_file_or_the_sidecar(tmp_path: Path, models: dict[str, Path]) -> None:
    from stoic.function.push import read_classes

    model = tmp_path / "m.keras"
    model.write_bytes(models["oryx"].read_bytes())
    with pytest.raises(InputError, match="no label set"):
        read_classes(None, None, model)
    (tmp_path / "m.keras.classes.json").write_text('["kudu", "eland", "oryx"]')
    assert read_classes(None, None, model) == ["kudu", "eland", "oryx"]
    lines = tmp_path / "labels.txt"
    lines.write_text("kudu\neland\n\noryx\n")
    assert read_classes(None, lines, model) == ["kudu", "eland", "oryx"]
    with pytest.raises(InputError, match="duplicate labels"):
        read_classes("a,b,a", None, model)
    with pytest.raises(InputError, match="at least 2"):
        read_classes("a", None, model)


@pytest.mark.parametrize("problem", ["not keras", "non-square", "two inputs", "wrong suffix"])
def test_unusable_models_are_refused(tmp_path: Path, problem: str) -> None:
    import keras

    from stoic.function.push import push_model

    path = tmp_path / "m.keras"
    if problem == "not keras":
        path.write_bytes(b"PK\x03\x04 not a zip really")
        match = "Keras cannot load it"
    elif problem == "wrong suffix":
        path = tmp_path / "m.h5"
        path.write_bytes(b"x")
        match = "ending in '.keras'"
    else:
        if problem == "non-square":
            inputs = [keras.Input(shape=(16, 24, 3))]
            x = keras.layers.GlobalMaxPooling2D()(inputs[0])
            match = "not square"
        else:
            inputs = [keras.Input(shape=(16, 16, 3)), keras.Input(shape=(16, 16, 3))]
            x = keras.layers.GlobalMaxPooling2D()(keras.layers.Add()(inputs))
            match = "2 inputs"
        keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(path)
    store = DirObjectStore(tmp_path / "objects")
    with pytest.raises(InputError, match=match):
        push_model(store, path, app="classify", version="5", classes=["a", "b"])
    assert store.list("") == []


# End to end ------------------------------------------------------------------------------


def scene_jpeg(label: str, seed: int) -> bytes:
    from stoic.function.classifier import draw_scene

    buf = io.BytesIO()
    draw_scene(label, np.random.default_rng(seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@contextlib.asynccontextmanager
async def real_daemon(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The daemon in-process with its real local backend (function server processes)."""
    from stoic.api.app import create_app

    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        yield client


async def run_batch(client: httpx.AsyncClient, seed: int) -> dict[str, Any]:
    labels = ["bird", "fox", "human"]
    r = await client.post(
        "/v1/batches",
        files=[
            ("files", (f"{lb}-{seed}.jpg", scene_jpeg(lb, seed + i), "image/jpeg"))
            for i, lb in enumerate(labels)
        ],
    )
    assert r.status_code == 202, r.text
    async with asyncio.timeout(300):
        while True:
            body: dict[str, Any] = (await client.get(f"/v1/batches/{r.json()['id']}")).json()
            if body["state"] in ("done", "failed"):
                return body
            await asyncio.sleep(0.2)


async def test_pushed_default_version_labels_the_next_batch(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    from stoic.settings import Settings
    from stoic.store import Store

    settings = Settings(
        data_dir=tmp_path / "data",
        runtimes=[{"name": "edge", "kind": "edge"}],
        controller={"inquisitor": False, "demo_model": False, "bootstrap": True},
    )
    objects = str(settings.objects_path)
    first = push(str(models["zebra"]), "--version", "1", "--classes", "zebra,okapi",
                 "--store-dir", objects)  # fmt: skip
    assert first.exit_code == 0, first.output

    async with real_daemon(settings) as client:
        one = await run_batch(client, seed=1)
        assert one["state"] == "done", one
        assert one["app_version"] == "1"
        assert [x["label"] for x in one["results"]] == ["zebra"] * 3

        pushed = await asyncio.to_thread(
            push, str(models["oryx"]), "--version", "2", "--classes", "kudu,eland,oryx",
            "--store-dir", objects,
        )  # fmt: skip
        assert pushed.exit_code == 0, pushed.output
        r = await client.put("/v1/models/default", json={"version": "2"})
        assert r.status_code == 200, r.text

        two = await run_batch(client, seed=2)
        assert two["state"] == "done", two
        assert two["app_version"] == "2"
        assert [x["label"] for x in two["results"]] == ["oryx"] * 3
        assert set(two["results"][0]["scores"]) == {"kudu", "eland", "oryx"}

    with Store(settings.database_url) as store:
        # Each version was bootstrapped on its first batch (two representative runs),
        # then its batch: its processing samples are its own.
        assert store.count_processing_samples("classify", "1", "edge") == 3
        assert store.count_processing_samples("classify", "2", "edge") == 3
