"""A site's own model, end to end, and the model contract checked at push.

``stoic model train`` learns three visibly distinct generated classes from a folder of
``<label>/*.jpg`` (16 images each, 32x32 input, a few epochs: seconds), ``stoic model
push`` stores it with the labels and preprocessing written beside it, and ``stoic
serve`` (a subprocess, the local backend running the real function server) labels a
batch of held-out images with it. A model exported elsewhere (a SavedModel without
rescaling layers) is pushed with its scaling declared and gives exactly what it gives
in TensorFlow. Contract mismatches are refused at push, nothing stored.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from stoic.errors import InputError
from stoic.storage.objectstore import DirObjectStore
from stoic.storage.package import PackageWriter, package_key
from tests.support.client import submit, wait_state
from tests.support.images import SITE_LABELS, site_scene
from tests.support.net import free_port, tail, wait_for
from tests.support.paths import REPO
from tests.support.processes import STOIC, daemon_env, serve, stop

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PER_LABEL = 16
HELD_OUT = 8
SIZE = 32


def cli(*args: str) -> Any:
    from stoic.cli import app

    return CliRunner().invoke(app, list(args))


def held_out() -> list[tuple[str, str, bytes]]:
    """(true label, file name, JPEG) of images the model never saw (other seeds)."""
    return [
        (label, f"cam-{i}-{k:03d}.jpg", site_scene(label, 90_000 + 100 * i + k))
        for i, label in enumerate(SITE_LABELS)
        for k in range(HELD_OUT)
    ]


def predict(model_file: Path, images: list[bytes]) -> list[str]:
    """The labels the model in ``model_file`` gives, in this process."""
    import keras

    from stoic.function.classifier import decode_image

    model = keras.saving.load_model(model_file, compile=False)
    x = np.stack([decode_image(data, SIZE) for data in images]).astype("float32")
    return [SITE_LABELS[i] for i in np.argmax(np.asarray(model(x)), axis=1)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled folder as a site sorts its photographs, with the usual debris."""
    root = tmp_path_factory.mktemp("site")
    for i, label in enumerate(SITE_LABELS):
        card = root / label / "card1"
        card.mkdir(parents=True)
        for k in range(PER_LABEL):
            (card / f"IMG_{k:04d}.JPG").write_bytes(site_scene(label, 100 * i + k))
    (root / "heron" / "notes.txt").write_text("not an image")
    (root / "coyote" / ".DS_Store").write_bytes(b"\0\1")
    (root / ".thumbnails").mkdir()
    return root


@pytest.fixture(scope="module")
def trained(site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("model") / "site.keras"
    r = cli("model", "train", str(site), "--out", str(out), "--input-size", str(SIZE),
            "--epochs", "6", "--batch-size", "4")  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout.strip().splitlines()[-1])


def test_train_writes_a_model_and_its_contract(trained: tuple[Path, dict[str, Any]]) -> None:
    model, summary = trained
    assert summary["classes"] == list(SITE_LABELS)
    assert summary["skipped"] == 1  # notes.txt; hidden files are not images of the site
    assert summary["n_train"] + summary["n_val"] >= 3 * PER_LABEL
    assert json.loads(Path(f"{model}.classes.json").read_text()) == list(SITE_LABELS)
    assert json.loads(Path(f"{model}.preprocessing.json").read_text()) == {
        "input_size": SIZE,
        "channels": 3,
        "scaling": "0..255",
    }


def test_trained_model_labels_a_batch_through_the_daemon(
    tmp_path: Path, trained: tuple[Path, dict[str, Any]]
) -> None:
    model, _ = trained
    data = tmp_path / "data"
    objects = data / "objects"

    # The model alone (no side files), declared otherwise than it shows: one line,
    # exit 2, nothing stored.
    bare = tmp_path / "bare.keras"
    bare.write_bytes(model.read_bytes())
    wrong = subprocess.run(
        [*STOIC, "model", "push", str(bare), "--version", "site-1", "--scaling", "0..1",
         "--classes", ",".join(SITE_LABELS), "--store-dir", str(objects)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=daemon_env(),
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("stoic: error:")]
    assert len(errors) == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "scaling '0..1'" in errors[0] and "Rescaling" in errors[0]
    assert not objects.exists() or DirObjectStore(objects).list("") == []

    pushed = cli("model", "push", str(model), "--version", "site-1", "--store-dir", str(objects))
    assert pushed.exit_code == 0, pushed.output
    assert f"{SIZE}x{SIZE} input, pixels 0..255, labels {list(SITE_LABELS)}" in pushed.output

    config = tmp_path / "stoic.toml"
    config.write_text(
        f"""
data_dir = "{data}"

[controller]
app_version = "site-1"
inquisitor = false
bootstrap = false
demo_model = false

[[runtimes]]
name = "edge"
kind = "edge"
"""
    )
    images = held_out()
    log = tmp_path / "daemon.log"
    port = free_port()
    proc = serve(config, port, log, daemon_env())
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_for(client, "/readyz", 120, log, proc)
            batch_id = submit(client, [(name, jpg) for _, name, jpg in images])
            batch = wait_state(client, batch_id, timeout_s=400, poll_s=0.5, log=log)
    finally:
        assert stop(proc) == 0, tail(log)
    assert batch["state"] == "done", f"{batch}\n{tail(log)}"
    assert batch["app_version"] == "site-1"
    results = {x["name"]: x for x in batch["results"]}
    served = [results[name]["label"] for _, name, _ in images]
    assert all(set(results[name]["scores"]) == set(SITE_LABELS) for _, name, _ in images)
    # The trained model's own answers, image for image, so the same model and the same
    # preprocessing: and it learnt something (chance is 1/3).
    assert served == predict(model, [jpg for _, _, jpg in images])
    accuracy = np.mean([s == truth for s, (truth, _, _) in zip(served, images, strict=True)])
    assert accuracy >= 0.75, (accuracy, served)


def test_a_base_with_other_labels_gets_a_new_head_on_frozen_features(
    tmp_path: Path, site: Path, trained: tuple[Path, dict[str, Any]]
) -> None:
    import keras

    base, _ = trained
    folder = tmp_path / "two"
    for label, sources in (("animal", ("coyote", "heron")), ("nothing", ("empty",))):
        (folder / label).mkdir(parents=True)
        for src in sources:
            for f in sorted((site / src / "card1").iterdir())[:4]:
                (folder / label / f"{src}-{f.name}").write_bytes(f.read_bytes())
    out = tmp_path / "two.keras"
    r = cli("model", "train", str(folder), "--out", str(out), "--base", str(base), "--epochs", "1")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["classes"] == ["animal", "nothing"]
    assert summary["base"] == f"{base} (new head)" and summary["input_size"] == SIZE
    old = keras.saving.load_model(base, compile=False)
    new = keras.saving.load_model(out, compile=False)
    assert new.output_shape == (None, 2)
    for before, after in zip(old.layers[:-1], new.layers[:-1], strict=True):
        for w0, w1 in zip(before.get_weights(), after.get_weights(), strict=True):
            np.testing.assert_array_equal(w0, w1)


# The contract at push --------------------------------------------------------------------


def tiny_model(rescale: bool = True, channels: int = 3, size: int = 16) -> Any:
    import keras

    inputs = keras.Input(shape=(size, size, channels))
    x = keras.layers.Rescaling(1.0 / 255)(inputs) if rescale else inputs
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


@pytest.mark.parametrize(
    ("problem", "match"),
    [
        ("scaled twice", r"declared scaling '0\.\.1' but its input layer .* is Rescaling"),
        ("size", r"declared input_size 32 but the model's input is \(None, 16, 16, 3\)"),
        ("grayscale", r"takes 1 channel\(s\).*feeds RGB images, 3 channels"),
        ("undeclared", r"does not show how it scales its input.*declare it"),
        ("lambda", r"Keras cannot load it: .*safe_mode"),
    ],
)
def test_a_contract_mismatch_is_refused_at_push(tmp_path: Path, problem: str, match: str) -> None:
    import keras

    from stoic.function.push import push_model, read_declaration

    path = tmp_path / "m.keras"
    model = tiny_model(rescale=problem != "undeclared", channels=1 if problem == "grayscale" else 3)
    if problem == "lambda":
        inputs = keras.Input(shape=(16, 16, 3))
        x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    model.save(path)
    side = {"scaled twice": {"scaling": "0..1"}, "size": {"input_size": 32}}.get(problem)
    if side is not None:
        Path(f"{path}.preprocessing.json").write_text(json.dumps(side))
    store = DirObjectStore(tmp_path / "objects")
    with pytest.raises(InputError, match=match):
        declared = read_declaration(None, None, path)
        push_model(store, path, app="classify", version="2", classes=["a", "b"], declared=declared)
    assert store.list("") == []


def test_a_flag_and_the_side_file_disagreeing_is_refused(tmp_path: Path) -> None:
    from stoic.function.push import read_declaration

    path = tmp_path / "m.keras"
    Path(f"{path}.preprocessing.json").write_text('{"scaling": "0..1"}')
    assert read_declaration("0..1", 64, path).given() == {"input_size": 64, "scaling": "0..1"}
    with pytest.raises(InputError, match=r"says scaling '0\.\.1' but --scaling says '-1\.\.1'"):
        read_declaration("-1..1", None, path)
    Path(f"{path}.preprocessing.json").write_text('{"scaling": "0-1", "size": 3}')
    with pytest.raises(InputError, match=r"unknown field\(s\) \['size'\]"):
        read_declaration(None, None, path)


def test_a_saved_model_is_pushed_with_its_declared_scaling(tmp_path: Path) -> None:
    """A SavedModel exported by another tool, trained on pixels / 255 outside the
    network: refused until its scaling is declared, then the function gives its scores."""
    import keras

    from stoic.function.classifier import decode_image
    from stoic.function.handler import Function

    keras.utils.set_random_seed(3)
    model = tiny_model(rescale=False)
    exported = tmp_path / "exported"
    model.export(exported, verbose=False)
    store = DirObjectStore(tmp_path / "objects")
    objects = str(tmp_path / "objects")

    refused = cli("model", "push", str(exported), "--version", "3", "--classes", "heron,empty",
                  "--store-dir", objects)  # fmt: skip
    assert isinstance(refused.exception, InputError)
    assert "does not show how it scales its input" in str(refused.exception)
    assert store.list("") == []

    Path(f"{exported}.preprocessing.json").write_text('{"scaling": "0..1"}')
    pushed = cli("model", "push", str(exported), "--version", "3", "--classes", "heron,empty",
                 "--store-dir", objects)  # fmt: skip
    assert pushed.exit_code == 0, pushed.output
    key = "models/classify/3/model.keras"
    assert tarfile.is_tarfile(store.root / key)
    assert json.loads(store.get_bytes(f"{key}.preprocessing.json")) == {
        "input_size": 16,
        "channels": 3,
        "scaling": "0..1",
    }

    jpegs = [site_scene(label, 7 + i) for i, label in enumerate(SITE_LABELS)]
    buf = io.BytesIO()
    with PackageWriter(buf) as writer:
        for i, data in enumerate(jpegs):
            writer.add_bytes(f"{i}.jpg", data)
    store.put_bytes(package_key("b1"), buf.getvalue())
    out = Function(store)({"package": package_key("b1"), "model": key})
    want = np.asarray(model(np.stack([decode_image(d, 16) for d in jpegs]) / np.float32(255)))
    got = np.array([[r["scores"]["heron"], r["scores"]["empty"]] for r in out["results"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
