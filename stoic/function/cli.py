"""``stoic model``: create, train and install the function's model in the object store.

``stoic model init`` trains the offline **demo** model on generated scenes (seconds on
a laptop CPU) and stores it at ``models/<app>/<version>/model.keras`` so that a fresh
machine can run the whole pipeline. ``stoic model train`` trains on a site's labelled
images: a local folder of ``<label>/<image>`` files into a ``.keras`` file ready to push
(:mod:`stoic.function.folder`), or images already in the store (``<prefix>/<label>/
<file>``). ``stoic model push`` installs a model (trained here or exported from another
tool, ``.keras`` or SavedModel) as a new application version
(:mod:`stoic.function.push`); ``stoic model default`` (a REST client, mounted here from
:mod:`stoic.client`) makes a version the one new batches use.

All three need TensorFlow (``pip install 'stoic[function]'``); without it they stop
with one line naming the extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from stoic.extras import require

if TYPE_CHECKING:
    from stoic.settings import Settings
    from stoic.storage.objectstore import ObjectStore

app = typer.Typer(
    help="Create, train, install and choose the function's model.",
    no_args_is_help=True,
)


def _store(store_dir: Path | None, config: Path | None) -> tuple[ObjectStore, Settings]:
    """The object store the daemon uses: the same settings file (``--config``, else the
    first found: :func:`stoic.configfile.find_config`), unless ``--store-dir`` names one."""
    from stoic.configfile import find_config
    from stoic.settings import load_settings
    from stoic.storage.objectstore import DirObjectStore, make_object_store

    found = find_config(config)
    settings = load_settings(found.path if found else None)
    store: ObjectStore = DirObjectStore(store_dir) if store_dir else make_object_store(settings)
    return store, settings


@app.command("init")
def init(
    store_dir: Path | None = typer.Option(
        None, "--store-dir", help="directory object store (default: from settings)"
    ),
    version: str | None = typer.Option(
        None, "--version", help="application version (default: controller.app_version)"
    ),
    app_name: str | None = typer.Option(None, "--app", help="application (default: settings)"),
    config: Path | None = typer.Option(None, "--config", help="settings file (TOML/YAML)"),
    per_class: int = typer.Option(80, "--per-class", min=4, help="generated images per class"),
    epochs: int = typer.Option(12, "--epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
    if_missing: bool = typer.Option(
        False, "--if-missing", help="do nothing if a model is already stored for this version"
    ),
) -> None:
    """Train the offline DEMO model on generated images and store it."""
    require("function", "stoic model init")
    from stoic.function.classifier import CLASSES, save_model, train_demo_model
    from stoic.storage.package import model_key

    store, settings = _store(store_dir, config)
    key = model_key(app_name or settings.controller.app, version or settings.controller.app_version)
    if if_missing and store.exists(key):
        typer.echo(f"{key} already in {store!r}; nothing to do")
        return
    typer.echo(f"training the demo model on {per_class * len(CLASSES)} generated images ...")
    result = train_demo_model(per_class, epochs, seed)
    n = save_model(result.model, store, key, result.classes)
    typer.echo(
        f"stored {key} ({n} bytes) in {store!r}; held-out accuracy on generated images "
        f"{result.val_accuracy:.2f} (a demo model: see docs/function.md to train on real images)"
    )


@app.command("train")
def train(
    images: str = typer.Argument(
        ...,
        help="a local folder of <label>/<image> files (with --out), or an object-store "
        "prefix laid out <prefix>/<label>/<file> (with --output)",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="write the model here (FILE.keras, its labels and preprocessing "
        "beside it), ready for stoic model push",
    ),
    output: str | None = typer.Option(
        None, "--output", help="object key of the new model (.keras), trained in the store"
    ),
    base_model: str | None = typer.Option(
        None,
        "--base-model",
        "--base",
        help="a model to start from: FILE.keras with --out "
        "(other labels: new head on its frozen features), a model key with --output",
    ),
    epochs: int = typer.Option(5, "--epochs", min=1),
    input_size: int = typer.Option(
        64, "--input-size", min=8, help="square input size of a new model (pixels)"
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.0, max=0.9),
    seed: int = typer.Option(0, "--seed"),
    store_dir: Path | None = typer.Option(None, "--store-dir"),
    config: Path | None = typer.Option(None, "--config"),
) -> None:
    """Train a classifier on labelled images: a local folder (--out) or the store (--output)."""
    require("function", "stoic model train")
    from stoic.errors import InputError

    if (out is None) == (output is None):
        raise InputError("give where the model goes once: --out FILE.keras or --output KEY")
    if out is not None:
        from stoic.function.folder import train_folder

        trained = train_folder(
            Path(images),
            out,
            base=Path(base_model) if base_model else None,
            input_size=input_size,
            epochs=epochs,
            batch_size=batch_size,
            val_fraction=val_fraction,
            seed=seed,
        )
        for line in trained.skipped:
            typer.echo(f"skipped {line}", err=True)
        typer.echo(json.dumps(trained.summary() | {"skipped": len(trained.skipped)}))
        return
    from stoic.function.handler import Function

    store, _ = _store(store_dir, config)
    result = Function(store)(
        {
            "action": "train",
            "images": images,
            "output": output,
            "base_model": base_model,
            "epochs": epochs,
            "batch_size": batch_size,
            "val_fraction": val_fraction,
            "seed": seed,
        }
    )
    typer.echo(json.dumps({k: result[k] for k in ("model", "val_accuracy", "n_train", "n_val")}))


@app.command("push")
def push(
    file: Path = typer.Argument(
        ..., help="the model: a Keras file (FILE.keras) or a SavedModel directory"
    ),
    app_name: str | None = typer.Option(None, "--app", help="application (default: settings)"),
    version: str = typer.Option(..., "--version", help="the new application version"),
    classes: str | None = typer.Option(
        None, "--classes", help="the labels, in output order, comma-separated: a,b,c"
    ),
    classes_file: Path | None = typer.Option(
        None, "--classes-file", help="the labels: a JSON list, or one per line"
    ),
    scaling: str | None = typer.Option(
        None,
        "--scaling",
        help="the pixel range the model expects: 0..255 (it rescales "
        "itself), 0..1 or -1..1 (default: FILE.preprocessing.json, else what its layers show)",
    ),
    input_size: int | None = typer.Option(
        None, "--input-size", min=1, help="its square input size, where its shape leaves it open"
    ),
    replace: bool = typer.Option(
        False, "--replace", help="overwrite a model already stored for this version"
    ),
    store_dir: Path | None = typer.Option(None, "--store-dir", help="directory object store"),
    config: Path | None = typer.Option(None, "--config", help="settings file (TOML/YAML)"),
) -> None:
    """Check a model trained elsewhere against its labels and store it as a new version.

    Without --classes/--classes-file the labels are read from FILE.classes.json, and the
    preprocessing from FILE.preprocessing.json where there is one. Nothing is stored if
    the model does not load or does not match its labels and preprocessing.
    Then make the version the default: stoic model default --version V.
    """
    require("function", "stoic model push")
    from stoic.function.push import push_model, read_classes, read_declaration

    labels = read_classes(classes, classes_file, file)
    declared = read_declaration(scaling, input_size, file)
    store, settings = _store(store_dir, config)
    app_id = app_name or settings.controller.app
    pushed = push_model(
        store, file, app=app_id, version=version, classes=labels, declared=declared,
        replace=replace,
    )  # fmt: skip
    size = pushed.preprocessing.input_size
    typer.echo(
        f"{'replaced' if pushed.replaced else 'stored'} {pushed.key} ({pushed.n_bytes} bytes, "
        f"{size}x{size} input, pixels {pushed.preprocessing.scaling}, labels "
        f"{list(pushed.classes)}) in {store!r}"
    )
    typer.echo(
        f"new batches use it once it is the default: stoic model default --app {app_id} "
        f"--version {version}",
        err=True,
    )
