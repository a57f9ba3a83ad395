"""Settings for the daemons the tests start.

In-process daemons (:func:`make_settings`) and ``stoic serve`` children
(:func:`standin_config`) both run without background work (no inquisitor, no bootstrap,
no demo model) unless a test turns it on: what a test checks then happens because the
test did it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from stoic.settings import Settings
from tests.support.paths import STAND_IN

LIMITS = {"max_batch_images": 8, "max_batch_bytes": 400_000, "max_image_bytes": 60_000}

CLIENT_HOST = "stoic"
"""The host name the in-process clients ask for (``http://stoic``): an allowed host."""


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """An in-process daemon's settings under ``tmp_path``, with small upload limits
    (:data:`LIMITS`) and :data:`CLIENT_HOST` allowed; ``controller`` and ``api``
    overrides are merged, others replace."""
    controller = {"inquisitor": False, "demo_model": False, "bootstrap": False}
    controller.update(overrides.pop("controller", {}))
    api: dict[str, Any] = {**LIMITS, "allowed_hosts": [CLIENT_HOST]}
    api.update(overrides.pop("api", {}))
    return Settings(data_dir=tmp_path / "data", controller=controller, api=api, **overrides)


def checked_settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    """A daemon's settings with the inquisitor on a fast tick, checking ``url``
    (``overrides`` as :func:`make_settings` takes them)."""
    return make_settings(
        tmp_path,
        controller={"inquisitor": True},
        inquisitor={
            "period_s": 0.05,
            "uplink_check_url": url,
            "uplink_check_timeout_s": 0.5,
        },
        **overrides,
    )


def standin_config(
    tmp: Path, data: Path, standin_args: str, *, edge_per_image_s: float = 0.1, extra: str = ""
) -> Path:
    """A settings file for ``stoic serve`` on the local backend with the stand-in function
    (``standin_args``: its options, as TOML list items) and no background work; ``extra``
    is appended (more runtimes, sections)."""
    config = tmp / "stoic.toml"
    config.write_text(
        f"""
data_dir = "{data}"

[controller]
inquisitor = false
bootstrap = false
demo_model = false
drain_grace_s = 5

[local]
command = ["{sys.executable}", "{STAND_IN}", "--no-model-check", {standin_args}]

[[runtimes]]
name = "edge"
kind = "edge"
prior_per_image_s = {edge_per_image_s}
prior_fixed_s = {1.0 if edge_per_image_s >= 0.1 else 0.1}
{extra}"""
    )
    return config
