"""The model contract: what a stored model promises the function, checked once, at push.

The function feeds every model the same way: each image is decoded, converted to RGB
and resized to ``H × H`` (bilinear, aspect ratio not kept: :func:`~stoic.function.
classifier.decode_image`), giving pixels 0..255; these are **scaled** as the model
declares and cast to the model's input dtype; the answer is read as one score per
label, in the order of the label set. A model that expects anything else (another
size, one channel, pixels already in 0..1, its classes in another order) does not
fail: it answers, wrongly, on every image. That is why a stored model carries its
contract beside its key, and why :func:`resolve` compares the contract with what the
model itself shows before anything is stored (:mod:`stoic.function.push`):

* ``<key>.classes.json``: the label set, a JSON list in output order;
* ``<key>.preprocessing.json``: ``{"input_size": H, "channels": 3, "scaling": S}``
  with ``S`` one of :data:`SCALINGS` (``"0..255"``: raw pixels, the model rescales
  itself, as the demo CNN does with a ``Rescaling(1/255)`` first layer; ``"0..1"``:
  pixels / 255; ``"-1..1"``: pixels / 127.5 - 1).

Where the model shows how it scales its input (a ``Rescaling`` or ``Normalization``
layer before any other computing layer, nested models included, as in Keras'
``MobileNetV3`` and ``EfficientNet``) that is its expected scaling, and a declaration
that says otherwise is refused: the pixels would be scaled twice, or not at all. Where
it does not (a model trained on ``x / 255`` outside the network; a SavedModel, whose
layers are not visible), the scaling must be declared: a guess would be right only by
luck. A model stored before contracts existed has no preprocessing file and is read
as ``0..255`` at its input size, which is what the function always fed it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np

from stoic.errors import InputError

Scaling = Literal["0..255", "0..1", "-1..1"]
SCALINGS: Final[tuple[Scaling, ...]] = get_args(Scaling)
_AFFINE: Final[dict[Scaling, tuple[float, float]]] = {
    "0..255": (1.0, 0.0),
    "0..1": (1.0 / 255.0, 0.0),
    "-1..1": (1.0 / 127.5, -1.0),
}
CHANNELS: Final = 3
"""The function feeds RGB images."""
LEGACY_INPUT_SIZE: Final = 64
"""The size a model stored before contracts, of no fixed input size, was fed at."""
_RANGES: Final[tuple[tuple[float, Scaling], ...]] = ((255.0, "0..255"), (1.0, "0..1"))
"""Input ranges a first Rescaling layer may expect: it maps the top of the right one
to a value of order 1 (1/255 and 1/127.5 with offset -1 for pixels; 2 with offset -1
for 0..1)."""

_PASS_THROUGH: Final = frozenset(
    {"InputLayer", "Resizing", "CenterCrop", "Cropping2D", "ZeroPadding2D", "Identity"}
)
"""Layers that move pixels without changing their values (augmentation layers, which
are off at inference, are matched by their ``Random`` prefix)."""


def classes_key(model_key: str) -> str:
    """Sidecar key holding the model's class names (JSON list), beside the model."""
    return model_key + ".classes.json"


def preprocessing_key(model_key: str) -> str:
    """Sidecar key holding the model's :class:`Preprocessing` (JSON), beside the model."""
    return model_key + ".preprocessing.json"


def beside(path: Path, suffix: str) -> Path:
    """The side file of a model file or SavedModel directory: ``species.keras`` →
    ``species.keras.classes.json``; ``export/species`` → ``export/species.classes.json``."""
    return path.with_name(path.name + suffix)


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """How the function turns an image into the model's input."""

    input_size: int
    scaling: Scaling = "0..255"

    def to_json(self) -> bytes:
        body = {"input_size": self.input_size, "channels": CHANNELS, "scaling": self.scaling}
        return json.dumps(body).encode()

    @property
    def affine(self) -> tuple[float, float]:
        """``(scale, offset)``: the input is ``pixels * scale + offset``."""
        return _AFFINE[self.scaling]

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels as the model's float32 input."""
        scale, offset = self.affine
        return pixels.astype("float32") * np.float32(scale) + np.float32(offset)


@dataclass(frozen=True, slots=True)
class Declared:
    """What a model's owner says about its preprocessing; None where nothing was said."""

    input_size: int | None = None
    channels: int | None = None
    scaling: Scaling | None = None

    def given(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


def parse_declaration(text: str | bytes, source: str) -> Declared:
    """A preprocessing file: a JSON object with any of ``input_size``, ``channels``,
    ``scaling``; anything else (a typo, a wrong type) is an InputError naming ``source``."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a JSON object such as {_EXAMPLE}")
    unknown = sorted(set(raw) - set(Declared.__slots__))
    if unknown:
        raise InputError(f"{source}: unknown field(s) {unknown}; the fields are {_FIELDS}")
    for name in ("input_size", "channels"):
        value = raw.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise InputError(f"{source}: {name} must be a positive integer, got {value!r}")
    return Declared(raw.get("input_size"), raw.get("channels"), scaling(raw.get("scaling"), source))


def scaling(value: object, source: str) -> Scaling | None:
    """``value`` as a :data:`Scaling` (None stays None), else an InputError."""
    if value is None:
        return None
    for s in SCALINGS:
        if value == s:
            return s
    raise InputError(f"{source}: scaling {value!r} is not one of {list(SCALINGS)}")


def stored_preprocessing(raw: bytes | None, source: str, model: Any) -> Preprocessing:
    """The preprocessing stored beside a model (``raw``; None for a model stored before
    contracts existed: ``0..255`` at the model's own input size)."""
    if raw is None:
        return Preprocessing(model_input_size(model) or LEGACY_INPUT_SIZE)
    return resolve(model, None, parse_declaration(raw, source), source)


_EXAMPLE = '{"input_size": 224, "scaling": "0..1"}'
_FIELDS = list(Declared.__slots__)


# What the model shows -----------------------------------------------------------------


def model_input_size(model: Any) -> int | None:
    """The model's square input size, None if it accepts any size."""
    shape = tuple(model.input_shape)
    return int(shape[1]) if len(shape) == 4 and shape[1] is not None else None


def expected_scaling(model: Any) -> tuple[Scaling, str] | None:
    """The scaling the model's first value-changing layer expects, with the layer
    described; None if the model does not show it (no such layer before computing)."""
    layer = _first_value_layer(model)
    if layer is None:
        return None
    kind = type(layer).__name__
    if kind == "Rescaling":
        scale = float(np.max(np.asarray(layer.scale, dtype="float64")))
        offset = float(np.min(np.asarray(layer.offset, dtype="float64")))
        what = f"its input layer {layer.name!r} is Rescaling(scale={scale:.6g}, offset={offset:g})"
        for pixels, expects in _RANGES:
            if 0.5 <= abs(pixels * scale + offset) <= 3.0:
                return expects, what
        return None
    mean = float(np.max(np.asarray(layer.mean, dtype="float64")))
    what = f"its input layer {layer.name!r} is Normalization(mean up to {mean:.4g})"
    return ("0..255", what) if mean > 2.0 else ("0..1", what) if mean <= 1.0 else None


def _first_value_layer(model: Any) -> Any | None:
    """The first Rescaling or Normalization layer met before any other computing layer
    (nested models are entered in turn); None if a computing layer comes first."""
    for layer in getattr(model, "layers", ()):
        kind = type(layer).__name__
        if kind in _PASS_THROUGH or kind.startswith("Random"):
            continue
        if kind in ("Rescaling", "Normalization"):
            return layer
        if hasattr(layer, "layers"):
            return _first_value_layer(layer)
        return None
    return None


# The check ----------------------------------------------------------------------------


def resolve(
    model: Any, classes: list[str] | tuple[str, ...] | None, declared: Declared, source: str
) -> Preprocessing:
    """The model's :class:`Preprocessing`, or one InputError naming ``source`` and the
    first thing that does not fit: inputs, channels, size, outputs against ``classes``
    (None: not checked), dtype, scaling."""
    if len(model.inputs) != 1:
        raise InputError(
            f"{source}: the model has {len(model.inputs)} inputs; the function feeds one"
        )
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise InputError(
            f"{source}: input shape {shape}; the function feeds images (None, H, W, 3)"
        )
    if shape[3] != CHANNELS or declared.channels not in (None, CHANNELS):
        has = shape[3] if shape[3] != CHANNELS else declared.channels
        raise InputError(
            f"{source}: the model takes {has} channel(s) (input shape {shape}, declared "
            f"{declared.given() or 'nothing'}); the function feeds RGB images, 3 channels"
        )
    if shape[1] is not None and shape[2] is not None and shape[1] != shape[2]:
        raise InputError(f"{source}: input shape {shape} is not square; the function feeds H × H")
    own = int(shape[1] or shape[2]) if (shape[1] or shape[2]) else None
    if own is not None and declared.input_size not in (None, own):
        raise InputError(
            f"{source}: declared input_size {declared.input_size} but the model's input is "
            f"{shape}: the function would feed {declared.input_size}×{declared.input_size} images"
        )
    size = own or declared.input_size
    if size is None:
        raise InputError(
            f"{source}: input shape {shape} has no fixed size; declare the size the model "
            f"was trained at (input_size)"
        )
    out_shape = model.output_shape
    if classes is not None and (
        not isinstance(out_shape, tuple) or len(out_shape) != 2 or out_shape[1] != len(classes)
    ):
        raise InputError(
            f"{source}: output shape {out_shape} does not match the label set: expected "
            f"(None, {len(classes)}), one score per label of {list(classes)}"
        )
    return Preprocessing(size, _resolve_scaling(model, declared, source))


def _resolve_scaling(model: Any, declared: Declared, source: str) -> Scaling:
    dtype = str(getattr(model.inputs[0], "dtype", "float32"))
    expected = expected_scaling(model)
    if expected is None:
        if declared.scaling is None:
            raise InputError(
                f"{source}: the model does not show how it scales its input (no Rescaling or "
                f"Normalization layer first); declare it: scaling one of {list(SCALINGS)} "
                f"(--scaling, or {_EXAMPLE} in a .preprocessing.json beside the model)"
            )
        chosen = declared.scaling
    else:
        chosen, what = expected
        if declared.scaling not in (None, chosen):
            raise InputError(
                f"{source}: declared scaling {declared.scaling!r} but {what}, so it expects "
                f"pixels {chosen}: its input would be scaled twice or not at all"
            )
    if "int" in dtype and chosen != "0..255":
        raise InputError(
            f"{source}: the model's input dtype is {dtype}, which cannot hold pixels scaled "
            f"to {chosen}"
        )
    return chosen
