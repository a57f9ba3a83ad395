"""What an upload may contain and what the client asked for.

:class:`IngestLimits` are the server's limits on a batch (from ``api.*`` settings);
:class:`IngestOptions` are the client's choices (``mode``, ``runtime``,
``skip_invalid``, ``deployment`` and the ``Idempotency-Key`` header), which may arrive as query
parameters or as form fields anywhere in the multipart body, even after the files.
:func:`parse_options` validates them into a 422 :class:`~stoic.errors.InvalidField`
naming the field at fault. Kept apart from the builder and the orchestration so both
can depend on it without depending on each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stoic.errors import InvalidField
from stoic.settings import ApiSettings
from stoic.values import API_MODES as API_MODES  # re-exported: the API offers these
from stoic.values import Mode

OPTION_FIELDS = frozenset({"mode", "runtime", "skip_invalid", "deployment"})
"""The only non-file form fields (and query parameters) an upload may carry."""

DEPLOYMENT = re.compile(r"^\w[\w .-]{0,63}$")
"""A deployment label: a camera placement's name, as its folder is usually called
(``cam01``, ``North ridge 2024``). Letters of any script, digits, ``_``, space,
``.`` and ``-``; it starts with a letter, digit or ``_``, so a spreadsheet that opens an
export never takes it for a formula."""


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """What one upload may cost. Every limit bounds work *before* it is done: bytes are
    counted as they are copied (rejected files included), pixels are read from an
    image's header before it is decoded, and with ``skip_invalid`` at most
    ``max_invalid`` images may be dropped."""

    max_images: int
    max_batch_bytes: int
    max_image_bytes: int
    max_image_pixels: int = 50_000_000
    max_batch_pixels: int = 50_000_000_000
    max_invalid: int = 20
    max_form_fields: int = 16
    max_form_bytes: int = 64 * 1024

    @property
    def max_entries(self) -> int:
        """Entries of all archives of a batch (directories and ignored files count):
        walking an archive costs CPU even for entries that hold nothing."""
        return 2 * (self.max_images + self.max_invalid) + 1024

    @classmethod
    def from_settings(cls, api: ApiSettings) -> IngestLimits:
        return cls(
            max_images=api.max_batch_images,
            max_batch_bytes=api.max_batch_bytes,
            max_image_bytes=api.max_image_bytes,
            max_image_pixels=api.max_image_pixels,
            max_batch_pixels=api.max_batch_pixels,
            max_invalid=api.max_invalid_images,
            max_form_fields=api.max_form_fields,
            max_form_bytes=api.max_form_bytes,
        )


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """What the client asked for besides the images (form fields or query parameters)."""

    mode: Mode
    pinned_runtime: str | None = None
    skip_invalid: bool = False
    idempotency_key: str | None = None
    deployment: str | None = None


def parse_bool(value: str, field_name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise InvalidField(
        f"{field_name}: expected true or false, got {value[:100]!r}", field=field_name
    )


def check_option_name(key: str) -> None:
    """Refuse a form field or query parameter that is not an option (422 naming it)."""
    if key not in OPTION_FIELDS:
        raise InvalidField(
            f"unknown field {key[:100]!r}; expected one of {sorted(OPTION_FIELDS)}",
            field=key[:100],
        )


def parse_options(
    values: Mapping[str, str],
    *,
    runtimes: Mapping[str, Any] | set[str] | list[str],
    default_mode: Mode,
    idempotency_key: str | None,
) -> IngestOptions:
    """Validate ``mode``, ``runtime``, ``skip_invalid`` and ``deployment`` (422 naming
    the field)."""
    for key in values:
        check_option_name(key)
    mode = default_mode
    if "mode" in values and values["mode"] != "":
        try:
            mode = Mode(values["mode"])
        except ValueError:
            mode = Mode.PINNED  # sentinel: not offered, rejected below
        if mode not in API_MODES:
            raise InvalidField(
                f"mode: unknown mode {values['mode'][:100]!r}; expected one of "
                + ", ".join(m.value for m in API_MODES),
                field="mode",
            )
    pinned = values.get("runtime") or None
    if pinned is not None and pinned not in runtimes:
        raise InvalidField(
            f"runtime: unknown runtime {pinned[:100]!r}; configured: {sorted(runtimes)}",
            field="runtime",
        )
    skip = parse_bool(values.get("skip_invalid", ""), "skip_invalid")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise InvalidField("Idempotency-Key must be 1-255 characters", field="Idempotency-Key")
    deployment = values.get("deployment", "").strip() or None
    if deployment is not None and not DEPLOYMENT.fullmatch(deployment):
        raise InvalidField(
            f"deployment: {deployment[:100]!r} is not a deployment label (1-64 letters, "
            "digits, '_', ' ', '.' or '-', starting with a letter, digit or '_')",
            field="deployment",
        )
    return IngestOptions(mode, pinned, skip, idempotency_key, deployment)
