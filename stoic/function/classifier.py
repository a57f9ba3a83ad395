"""The CNN of the paper's application (section 4.1): build, train, save, load, demo data.

The paper classifies camera-trap images from "Where's The Bear" into five classes
(bird, fox, rodent, human, empty) with a CNN in TensorFlow, up-sampling minority
classes before training, and stores the model in the object store. Pretrained weights
cannot be downloaded on an offline machine, so this module also draws a **demo data
set**: procedurally generated scenes whose class is learnable (a bird in the sky, a
red fox with ears, a small grey rodent on the ground, a standing person, or an empty
scene). ``stoic model init`` trains the small CNN on it in seconds so that the whole
pipeline runs on a fresh machine. It is a demo model: it knows nothing about real
camera-trap photographs; ``docs/function.md`` says how to train on real ones.

Input size is small (64x64 RGB) because the function's cost that the scheduler
predicts is dominated by per-image work; the model rescales 0-255 input itself so
serving and training share one preprocessing step (:func:`decode_image`).

TensorFlow is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from stoic.errors import InputError
from stoic.function.contract import (
    Declared,
    Preprocessing,
    beside,
    classes_key,
    preprocessing_key,
    resolve,
    stored_preprocessing,
)
from stoic.function.modelfile import fetched, load_path

if TYPE_CHECKING:
    import keras

    from stoic.storage.objectstore import ObjectStore

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASSES: tuple[str, ...] = ("bird", "fox", "rodent", "human", "empty")
INPUT_SIZE = 64
DEMO_SCENE = (128, 96)  # width, height of generated scenes (4:3 like a camera trap)


# Preprocessing ------------------------------------------------------------------------


def decode_image(data: bytes, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode JPEG/PNG/... bytes to a ``(size, size, 3)`` uint8 array.

    ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale directly, which makes a
    1920x1080 camera-trap JPEG several times cheaper to shrink to 64x64. Raises
    ``InputError`` for anything Pillow cannot read.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size * 2, size * 2))
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        raise InputError("cannot decode image: not an image format Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image: {exc}") from None


# The network --------------------------------------------------------------------------


def build_model(n_classes: int = len(CLASSES), size: int = INPUT_SIZE) -> keras.Model:
    """A small CNN: three conv blocks, global *max* pooling, softmax. ~60k parameters.

    Max rather than average pooling: a camera-trap class is "is there an animal of this
    kind anywhere", and averaging dilutes a small animal over the whole frame (with
    average pooling the demo set needed several times more epochs).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="stoic_cnn")


def save_model(
    model: keras.Model,
    store: ObjectStore,
    key: str,
    classes: Sequence[str],
    preprocessing: Preprocessing | None = None,
) -> int:
    """Save in Keras format (``.keras``) under ``key`` with its contract beside it (the
    class names and the preprocessing, :mod:`stoic.function.contract`; by default what
    the model shows, as the CNN of :func:`build_model` does by rescaling itself)."""
    if not key.endswith(".keras"):
        raise InputError(f"model key {key!r} must end in '.keras' (Keras format)")
    prep = preprocessing or resolve(model, list(classes), Declared(), key)
    with tempfile.TemporaryDirectory(prefix="stoic-model-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        with path.open("rb") as f:
            n = store.put_stream(key, f)
    store.put_bytes(classes_key(key), json.dumps(list(classes)).encode())
    store.put_bytes(preprocessing_key(key), prep.to_json())
    return n


def save_model_file(
    model: keras.Model, path: Path, classes: Sequence[str], preprocessing: Preprocessing
) -> None:
    """Save to a local ``.keras`` file with its contract in the side files that ``stoic
    model push`` reads (``FILE.keras.classes.json``, ``FILE.keras.preprocessing.json``)."""
    if path.suffix != ".keras":
        raise InputError(f"{path}: a Keras model file must end in '.keras'")
    model.save(path)
    beside(path, ".classes.json").write_text(json.dumps(list(classes)) + "\n")
    beside(path, ".preprocessing.json").write_bytes(preprocessing.to_json() + b"\n")


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A model read from the store, with its contract."""

    model: Any
    classes: list[str]
    preprocessing: Preprocessing


@contextlib.contextmanager
def open_model(store: ObjectStore, key: str) -> Iterator[StoredModel]:
    """The model under ``key`` (a Keras file or a SavedModel) with its class names and
    preprocessing; its files are kept until exit (a SavedModel's replicas load from
    them). Raises ObjectNotFound for the model key, InputError for a broken contract."""
    with fetched(store, key) as path:
        model = load_path(path)
        n_out = int(model.output_shape[-1])
        if store.exists(classes_key(key)):
            classes = [str(c) for c in json.loads(store.get_bytes(classes_key(key)))]
        else:
            classes = list(CLASSES[:n_out])
        if len(classes) != n_out:
            raise InputError(f"{classes_key(key)}: {len(classes)} class names for {n_out} outputs")
        pkey = preprocessing_key(key)
        raw = store.get_bytes(pkey) if store.exists(pkey) else None
        yield StoredModel(model, classes, stored_preprocessing(raw, pkey, model))


def load_model(store: ObjectStore, key: str) -> tuple[keras.Model, list[str]]:
    """Load a model and its class names; raises ObjectNotFound for the model key."""
    with open_model(store, key) as stored:
        return stored.model, stored.classes


# Training -----------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: Any
    classes: list[str]
    history: dict[str, list[float]]
    val_accuracy: float
    n_train: int
    n_val: int


def split_stratified(
    labels: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train/validation split that keeps every class in both parts."""
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * val_fraction) if len(idx) > 1 else 0
        n_val = min(max(n_val, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.array(sorted(train), dtype=int), np.array(sorted(val), dtype=int)


def upsample(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up-sample minority classes to the size of the largest (paper, section 4.1).

    The paper uses Keras' ImageDataGenerator; here duplicates are drawn with
    replacement and half of them mirrored, which is the augmentation that is safe for
    camera-trap scenes (animals face either way; the sky stays on top).
    """
    counts = np.bincount(y)
    target = int(counts.max())
    xs, ys = [x], [y]
    for c, n in enumerate(counts):
        if 0 < n < target:
            extra = rng.choice(np.flatnonzero(y == c), size=target - n, replace=True)
            dup = x[extra].copy()
            flip = rng.random(len(extra)) < 0.5
            dup[flip] = dup[flip][:, :, ::-1]
            xs.append(dup)
            ys.append(np.full(len(extra), c, dtype=y.dtype))
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(y_all))
    return x_all[order], y_all[order]


def train_model(
    x: np.ndarray,
    labels: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    base: keras.Model | None = None,
    epochs: int = 5,
    batch_size: int = 16,
    val_fraction: float = 0.2,
    learning_rate: float | None = None,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
) -> TrainResult:
    """Train (or fine-tune ``base``) on uint8 images ``x`` with string ``labels``,
    scaled as ``preprocessing`` says (default raw pixels: the CNN rescales itself).

    Holds out a stratified validation split *before* up-sampling, so validation
    accuracy is measured on images the model never saw, at their natural frequencies.
    """
    import keras

    if len(x) != len(labels) or len(x) < 2:
        raise InputError(f"need at least 2 labelled images, got {len(x)}")
    names = list(classes) if classes is not None else _class_order(set(labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise InputError(f"labels {unknown} are not classes of the model {names}")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    y = np.array([names.index(lbl) for lbl in labels], dtype=np.int64)
    train_idx, val_idx = split_stratified(y, val_fraction, rng)
    x_train, y_train = upsample(x[train_idx], y[train_idx], rng)
    model = base if base is not None else build_model(len(names), x.shape[1])
    if int(model.output_shape[-1]) != len(names):
        raise InputError(
            f"base model has {model.output_shape[-1]} outputs, data has {len(names)} classes"
        )
    lr = learning_rate if learning_rate is not None else (3e-3 if base is None else 1e-3)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    prep = preprocessing or Preprocessing(int(x.shape[1]))
    val = (prep.apply(x[val_idx]), y[val_idx]) if len(val_idx) else None
    fit = model.fit(
        prep.apply(x_train),
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=val,
        verbose=0,
        shuffle=True,
    )
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    val_acc = history.get("val_accuracy", [float("nan")])[-1]
    return TrainResult(model, names, history, val_acc, len(x_train), len(val_idx))


def transfer(base: keras.Model, n_classes: int) -> keras.Model:
    """``base`` with a new softmax head of ``n_classes`` on the features its own head
    read, and those features frozen (transfer learning: with a few hundred labelled
    images a site can train a head, not a network)."""
    import keras

    head = base.layers[-1]
    for layer in base.layers[:-1]:
        layer.trainable = False
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="site_scores")(head.input)
    return keras.Model(base.inputs, outputs, name=f"{base.name}_transfer")


def _class_order(labels: set[str]) -> list[str]:
    """The paper's five classes in their fixed order if the data uses only those."""
    if labels <= set(CLASSES):
        return list(CLASSES)
    return sorted(labels)


# Demo data ----------------------------------------------------------------------------


def _background(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> int:
    """Sky over ground with random tones and grass strokes; returns the horizon y."""
    horizon = int(h * rng.uniform(0.35, 0.55))
    sky = tuple(int(v) for v in rng.integers((120, 150, 170), (200, 215, 245)))
    ground = tuple(int(v) for v in rng.integers((60, 80, 30), (130, 140, 80)))
    draw.rectangle((0, 0, w, horizon), fill=sky)
    draw.rectangle((0, horizon, w, h), fill=ground)
    for _ in range(int(rng.integers(5, 20))):
        gx, gy = int(rng.integers(0, w)), int(rng.integers(horizon, h))
        shade = tuple(int(v) for v in rng.integers((40, 70, 20), (100, 130, 60)))
        draw.line((gx, gy, gx + int(rng.integers(-3, 4)), gy - int(rng.integers(3, 9))), shade)
    return horizon


def draw_scene(
    label: str, rng: np.random.Generator, size: tuple[int, int] = DEMO_SCENE
) -> Image.Image:
    """One generated camera-trap-like scene of class ``label``."""
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    horizon = _background(draw, rng, w, h)
    s = min(w, h) / 96  # scale factor so other scene sizes still work
    if label == "bird":  # dark V-shaped wings high in the sky
        cx = int(rng.integers(int(15 * s), w - int(15 * s)))
        cy = int(rng.integers(5, max(6, horizon - 8)))
        span = int(rng.integers(int(12 * s), int(20 * s)))
        col = tuple(int(v) for v in rng.integers(10, 60, size=3))
        draw.line(
            (cx - span, cy - span // 2, cx, cy, cx + span, cy - span // 2), col, width=int(5 * s)
        )
    elif label == "fox":  # orange body, tail and two ear triangles on the ground
        bw, bh = int(rng.integers(int(26 * s), int(36 * s))), int(rng.integers(12, 18) * s)
        x0 = int(rng.integers(0, w - bw - int(14 * s)))
        y0 = int(rng.integers(horizon, max(horizon + 1, h - bh - 2)))
        col = (int(rng.integers(190, 240)), int(rng.integers(80, 120)), int(rng.integers(10, 40)))
        draw.ellipse((x0, y0, x0 + bw, y0 + bh), fill=col)
        hx = x0 + bw
        draw.ellipse((hx - 6 * s, y0 - 6 * s, hx + 6 * s, y0 + 6 * s), fill=col)
        for dx in (-5 * s, 2 * s):
            draw.polygon(
                [(hx + dx, y0 - 4 * s), (hx + dx + 3 * s, y0 - 12 * s), (hx + dx + 6 * s, y0 - 4)],
                fill=col,
            )
        draw.line((x0, y0 + bh // 2, x0 - 12 * s, y0 + bh // 3), (250, 250, 245), width=4)
    elif label == "rodent":  # small grey-brown blob with a thin tail, low in the frame
        bw, bh = int(rng.integers(int(12 * s), int(18 * s))), int(rng.integers(7, 10) * s)
        x0 = int(rng.integers(int(8 * s), w - bw - 2))
        y0 = int(rng.integers(max(horizon, h - int(30 * s)), h - bh - 1))
        g = int(rng.integers(90, 140))
        col = (g + 10, g, g - 20)
        draw.ellipse((x0, y0, x0 + bw, y0 + bh), fill=col)
        draw.line((x0, y0 + bh // 2, x0 - int(8 * s), y0 + bh), (60, 50, 50), width=1)
    elif label == "human":  # tall coloured torso, legs and a round head
        tw, th = int(rng.integers(int(10 * s), int(15 * s))), int(rng.integers(28, 40) * s)
        x0 = int(rng.integers(2, w - tw - 2))
        y1 = int(rng.integers(max(horizon + 10, h - int(20 * s)), h))
        y0 = max(int(12 * s), y1 - th)
        shirt = tuple(int(v) for v in rng.integers(0, 255, size=3))
        skin = tuple(int(v) for v in rng.integers((170, 120, 90), (235, 180, 150)))
        draw.rectangle((x0, y0, x0 + tw, y0 + (y1 - y0) * 0.55), fill=shirt)
        draw.rectangle((x0 + 1, y0 + (y1 - y0) * 0.55, x0 + tw - 1, y1), fill=(40, 40, 70))
        r = tw * 0.45
        mid = x0 + tw / 2
        draw.ellipse((mid - r, y0 - 2 * r, mid + r, y0), fill=skin)
    elif label != "empty":
        raise InputError(f"unknown demo class {label!r}; choose from {list(CLASSES)}")
    noise = rng.normal(0, 6, size=(h, w, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def demo_images(
    n_per_class: int | Sequence[int], seed: int = 0, fmt: str = "JPEG"
) -> list[tuple[str, bytes]]:
    """``(label, encoded image)`` pairs: ``n_per_class`` scenes of each class.

    ``n_per_class`` may be a sequence (one count per class in ``CLASSES`` order) to make
    an unbalanced set, as real camera-trap data is.
    """
    counts = [n_per_class] * len(CLASSES) if isinstance(n_per_class, int) else n_per_class
    rng = np.random.default_rng(seed)
    out = []
    for label, n in zip(CLASSES, counts, strict=True):
        for _ in range(n):
            buf = io.BytesIO()
            draw_scene(label, rng).save(buf, format=fmt, quality=90)
            out.append((label, buf.getvalue()))
    return out


def train_demo_model(n_per_class: int = 80, epochs: int = 12, seed: int = 0) -> TrainResult:
    """Train the demo model on generated scenes (``stoic model init``)."""
    pairs = demo_images(n_per_class, seed=seed)
    x = np.stack([decode_image(data) for _, data in pairs])
    labels = [label for label, _ in pairs]
    return train_model(x, labels, classes=CLASSES, epochs=epochs, seed=seed)
