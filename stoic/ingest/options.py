"""What an upload may contain and what the client asked for.

:class:`IngestLimits` are the server's limits on a batch (from ``api.*`` settings);
:class:`IngestOptions` are the client's choices (``mode``, ``runtime``,
``skip_invalid`` and the ``Idempotency-Key`` header), which may arrive as query
parameters or as form fields anywhere in the multipart body, even after the files.
:func:`parse_options` validates them into a 422 :class:`~stoic.errors.InvalidField`
naming the field at fault. Kept apart from the builder and the orchestration so both
can depend on it without depending on each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stoic.errors import InvalidField
from stoic.settings import ApiSettings
from stoic.values import Mode

API_MODES = (Mode.SELECTOR, Mode.DUPLICATOR, Mode.SHARE)
"""Modes a client may ask for; the replay's baselines are not offered over HTTP."""


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_images: int
    max_batch_bytes: int
    max_image_bytes: int

    @classmethod
    def from_settings(cls, api: ApiSettings) -> IngestLimits:
        return cls(api.max_batch_images, api.max_batch_bytes, api.max_image_bytes)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """What the client asked for besides the images (form fields or query parameters)."""

    mode: Mode
    pinned_runtime: str | None = None
    skip_invalid: bool = False
    idempotency_key: str | None = None


def parse_bool(value: str, field_name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise InvalidField(f"{field_name}: expected true or false, got {value!r}", field=field_name)


def parse_options(
    values: Mapping[str, str],
    *,
    runtimes: Mapping[str, Any] | set[str] | list[str],
    default_mode: Mode,
    idempotency_key: str | None,
) -> IngestOptions:
    """Validate ``mode``, ``runtime`` and ``skip_invalid`` (422 naming the field)."""
    known = {"mode", "runtime", "skip_invalid"}
    for key in values:
        if key not in known:
            raise InvalidField(f"unknown field {key!r}; expected one of {sorted(known)}", field=key)
    mode = default_mode
    if "mode" in values and values["mode"] != "":
        try:
            mode = Mode(values["mode"])
        except ValueError:
            mode = Mode.PINNED  # sentinel: not offered, rejected below
        if mode not in API_MODES:
            raise InvalidField(
                f"mode: unknown mode {values['mode']!r}; expected one of "
                + ", ".join(m.value for m in API_MODES),
                field="mode",
            )
    pinned = values.get("runtime") or None
    if pinned is not None and pinned not in runtimes:
        raise InvalidField(
            f"runtime: unknown runtime {pinned!r}; configured: {sorted(runtimes)}",
            field="runtime",
        )
    skip = parse_bool(values.get("skip_invalid", ""), "skip_invalid")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise InvalidField("Idempotency-Key must be 1-255 characters", field="Idempotency-Key")
    return IngestOptions(mode, pinned, skip, idempotency_key)
