"""``stoic serve`` refuses to listen beyond loopback without a token.

An API on ``0.0.0.0`` with no ``api.token`` lets anyone who reaches the port submit
batches (and spend the cloud budget), which is what the shipped container image and
Kubernetes manifests did by default. :func:`stoic.settings.check_listener` refuses it
unless ``api.allow_anonymous = true`` says that it is meant; ``stoic serve`` calls it
before it touches the data directory and exits 2 with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stoic.errors import ConfigError
from stoic.settings import ApiSettings, check_listener
from tests.support.paths import REPO


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    check_listener(ApiSettings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "edge.example.org", ""])
def test_beyond_loopback_needs_a_token_or_allow_anonymous(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_listener(ApiSettings(host=host))
    message = str(info.value)
    assert "\n" not in message
    assert f"api.host = {host!r} listens beyond loopback" in message
    assert "api.token" in message and "api.allow_anonymous = true" in message
    with pytest.raises(ValueError, match="an empty token would let anyone in"):
        ApiSettings(host=host, token="")  # refused by the settings themselves
    check_listener(ApiSettings(host=host, token="s3cret"))
    check_listener(ApiSettings(host=host, allow_anonymous=True))


def test_serve_refuses_in_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOIC_")}
    data = tmp_path / "data"
    out = subprocess.run(
        [sys.executable, "-m", "stoic.cli", "serve", "--host", "0.0.0.0", "--port", "0",
         "--data-dir", str(data)],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "stoic: error: api.host = '0.0.0.0' listens beyond loopback and api.token is not "
        "set: set api.token (STOIC_API__TOKEN), or api.allow_anonymous = true to serve "
        "without one"
    ]
    assert not data.exists()  # refused before touching anything
