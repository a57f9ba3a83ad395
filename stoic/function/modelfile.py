"""Model files in the two formats a site brings: a Keras file and a TensorFlow SavedModel.

* **Keras** (``model.save("species.keras")``, a zip): loaded with
  ``keras.saving.load_model(path, compile=False)`` and Keras' ``safe_mode`` left on, so
  a model cannot run Python code of its own when it is loaded (a ``Lambda`` layer is
  refused: the function image runs whatever it loads with the object store's rights).
* **SavedModel** (a directory with ``saved_model.pb``, as TensorFlow's
  ``tf.saved_model.save``, Keras' ``model.export`` and most other tools write it): a
  graph and its variables, no Python. Its ``serving_default`` signature must take one
  image tensor and give one score tensor; it is wrapped as a one-layer Keras model
  (``keras.layers.TFSMLayer``) so the function and the checks treat both formats alike.

In the object store a model lives under one key (``models/<app>/<version>/model.keras``,
the key the daemon, the backends and the function already agree on) whatever its
format: a Keras file as it is, byte for byte; a SavedModel directory as an uncompressed
tar of it (its variables are floats: compression would gain little). :func:`fetched`
tells them apart by their first bytes, so nothing else needs to know.

TensorFlow is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from stoic.errors import InputError

if TYPE_CHECKING:
    import keras

    from stoic.storage.objectstore import ObjectStore

ENDPOINT = "serving_default"
_SPOOL_BYTES = 64 * 1024 * 1024


def load_path(path: Path) -> keras.Model:
    """The model in ``path`` (a ``.keras`` file or a SavedModel directory), or an
    InputError naming the file and why it cannot be used."""
    import keras

    if path.is_dir():
        return _saved_model(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file or directory")
    if path.suffix != ".keras":
        raise InputError(
            f"{path}: expected a Keras model file ending in '.keras' (model.save) or a "
            "SavedModel directory (model.export, tf.saved_model.save)"
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
        raise InputError(f"{path}: Keras cannot load it: {_first_line(exc)}") from None


def _saved_model(path: Path) -> keras.Model:
    import keras

    if not (path / "saved_model.pb").is_file():
        raise InputError(f"{path}: a directory without saved_model.pb is not a SavedModel")
    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint=ENDPOINT)
    except Exception as exc:  # TensorFlow raises OSError, ValueError, its own errors
        raise InputError(
            f"{path}: TensorFlow cannot load the SavedModel: {_first_line(exc)}"
        ) from None
    _, specs = layer.call_endpoint_fn.structured_input_signature
    if len(specs) != 1:
        raise InputError(
            f"{path}: signature {ENDPOINT!r} takes {len(specs)} inputs {sorted(specs)}; "
            "the function feeds one image tensor"
        )
    (spec,) = specs.values()
    if spec.shape.rank is None:
        raise InputError(f"{path}: signature {ENDPOINT!r} has an input of unknown rank")
    inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, name="image")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise InputError(
                f"{path}: signature {ENDPOINT!r} gives {len(outputs)} outputs "
                f"{sorted(outputs)}; the function reads one tensor of scores"
            )
        (outputs,) = outputs.values()
    return keras.Model(inputs, outputs, name=path.name)


def trainable_copy(model: keras.Model, source: str) -> keras.Model:
    """A copy of ``model`` to train, its weights copied; an InputError for a SavedModel
    (its graph is frozen here: train it with the tool that made it)."""
    import keras

    if any(type(layer).__name__ == "TFSMLayer" for layer in model.layers):
        raise InputError(
            f"{source}: a SavedModel cannot be trained further here; train it where it was "
            "made, or start from a Keras (.keras) model"
        )
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def store_path(store: ObjectStore, key: str, path: Path) -> int:
    """Store the model at ``path`` under ``key``: a file as it is, a directory as a tar."""
    if not path.is_dir():
        with path.open("rb") as f:
            return store.put_stream(key, f)
    with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as spool:
        with tarfile.open(fileobj=cast(IO[bytes], spool), mode="w") as tar:
            tar.add(path, arcname=".")
        spool.seek(0)
        return store.put_stream(key, cast(IO[bytes], spool))  # type: ignore[arg-type]


@contextlib.contextmanager
def fetched(store: ObjectStore, key: str) -> Iterator[Path]:
    """The model under ``key`` as a local path (a ``.keras`` file, or a SavedModel
    directory unpacked from its tar), removed on exit. Raises ObjectNotFound."""
    with tempfile.TemporaryDirectory(prefix="stoic-model-") as tmp:
        path = Path(tmp) / "model.keras"
        with store.open_read(key) as src, path.open("wb") as dst:
            while chunk := src.read(1024 * 1024):
                dst.write(chunk)
        if zipfile.is_zipfile(path) or not tarfile.is_tarfile(path):
            yield path
            return
        unpacked = Path(tmp) / "saved_model"
        with tarfile.open(path) as tar:
            tar.extractall(unpacked, filter="data")
        path.unlink()
        yield unpacked
