"""The systemd unit (deploy/systemd/stoic.service): systemd itself checks it.

``systemd-analyze verify`` reads the unit as systemd would and names every unknown key,
bad value and missing binary; ``systemd-analyze security --offline`` scores its
hardening. Both skip, with the reason, where systemd-analyze is absent. The unit runs
``/opt/stoic/bin/stoic``, which is not installed here: the copy verified runs this
checkout's ``stoic`` instead, every other line as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

UNIT = REPO / "deploy" / "systemd" / "stoic.service"
SHIPPED_EXEC = "/opt/stoic/bin/stoic"
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian: apt-get install systemd)"
)


def installed_copy(tmp_path: Path) -> Path:
    stoic = Path(sys.executable).with_name("stoic")
    assert stoic.is_file(), f"{stoic}: the console script of this environment"
    text = UNIT.read_text()
    assert f"ExecStart={SHIPPED_EXEC} serve\n" in text
    copy = tmp_path / "stoic.service"
    copy.write_text(text.replace(SHIPPED_EXEC, str(stoic)))
    return copy


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@needs_analyze
def test_the_unit_verifies(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # An unknown key or bad value is a warning with exit code 0: any output fails too.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (
        done.stdout + done.stderr
    )


@needs_analyze
def test_the_unit_is_hardened(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    m = re.search(r"Overall exposure level for stoic\.service: ([0-9.]+)", done.stdout)
    assert m, done.stdout + done.stderr
    assert float(m[1]) <= 2.0, done.stdout  # 0 is a locked box, 10 an open one


def test_the_unit_keeps_state_and_settings_where_stoic_looks() -> None:
    s = settings(UNIT.read_text())
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["stoic"]  # $STATE_DIRECTORY: the default data_dir
    assert s["ConfigurationDirectory"] == ["stoic"]  # /etc/stoic/stoic.toml is found
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "MemoryMax"):
        assert key in s, key
    assert s["ProtectSystem"] == ["strict"]
    assert s["KillMode"] == ["mixed"]  # the daemon drains and stops its children itself
    assert s["RestartPreventExitStatus"] == ["2"]  # a settings error: no restart loop
