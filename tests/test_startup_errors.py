"""Settings a daemon cannot run on are refused at start-up, in one line (issue 26, items 2
and 9).

Each case runs the real ``stoic serve`` in a child process, as an operator would, and
expects exit code 2 and one line on stderr that names the setting at fault: no
traceback, no server that starts anyway, no password in the line. Before, an empty
token started a daemon whose page let anyone in, ``requester.default_mode = "pinned"``
started one on which every batch failed, ``objectstore.path = /proc/self`` and a
configuration without an edge runtime were accepted, and a bad ``database.url`` ended
in uvicorn's traceback and exit code 3.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stoic.errors import ConfigError
from stoic.settings import load_settings
from tests.support.net import free_port
from tests.support.paths import REPO
from tests.support.processes import STOIC, daemon_env, reap_standins
from tests.support.settings import standin_config

NO_EDGE = """
data_dir = "{data}"
[controller]
inquisitor = false
demo_model = false
[[runtimes]]
name = "cpu"
kind = "cpu"
"""

CASES = {
    "empty token": ({"STOIC_API__TOKEN": ""}, "", "api.token: Value error, an empty token"),
    "blank token": ({"STOIC_API__TOKEN": "  "}, "", "api.token: Value error, an empty token"),
    "pinned default mode": (
        {},
        '[requester]\ndefault_mode = "pinned"\n',
        "requester.default_mode: Value error, 'pinned' cannot be the default mode",
    ),
    "object store in /proc": (
        {},
        '[objectstore]\npath = "/proc/self"\n',
        "objectstore.path /proc/self: cannot write there",
    ),
    "data dir in /proc": (
        {"STOIC_DATA_DIR": "/proc/self"},
        "",
        "data_dir /proc/self: cannot create stoic.lock there",
    ),
    "database url without a scheme": (
        {"STOIC_DATABASE__URL": "not a url"},
        "",
        "database.url: Value error, unsupported database URL (no scheme://)",
    ),
    "database url of another database": (
        {"STOIC_DATABASE__URL": "mysql://root:hunter2@localhost/stoic"},
        "",
        "database.url: Value error, unsupported database URL ('mysql')",
    ),
    "database url with a bad port": (
        {"STOIC_DATABASE__URL": "postgresql+psycopg://stoic:hunter2@127.0.0.1:port/stoic"},
        "",
        "database.url: not a usable URL",
    ),
    "database that does not answer": (
        {"STOIC_DATABASE__URL": f"postgresql+psycopg://stoic:hunter2@127.0.0.1:{free_port()}/x"},
        "",
        "postgresql+psycopg://stoic:***@127.0.0.1:",
    ),
    "sqlite file where none can be made": (
        {"STOIC_DATABASE__URL": "sqlite:////proc/self/stoic/stoic.db"},
        "",
        "database.url: No such file or directory: /proc/self/stoic",
    ),
}


def _serve(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``stoic serve`` to its end; a daemon that starts anyway is killed at the timeout,
    and the function processes it started with it."""
    pids = config.parent / "pids"
    try:
        return subprocess.run(
            [*STOIC, "serve", "--config", str(config), "--port", str(free_port())],
            cwd=REPO,
            env=daemon_env(STANDIN_PIDFILE=str(pids), **env),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        reap_standins(pids)


@pytest.mark.slow
@pytest.mark.parametrize(("env", "extra", "named"), CASES.values(), ids=CASES.keys())
def test_bad_settings_are_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], extra: str, named: str
) -> None:
    config = standin_config(tmp_path, tmp_path / "data", '"--batch-delay", "0"', extra=extra)
    result = _serve(config, env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stoic: error: ") and named in lines[0], lines[0]
    assert "hunter2" not in result.stderr


@pytest.mark.slow
def test_a_daemon_without_an_edge_runtime_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "stoic.toml"
    config.write_text(NO_EDGE.format(data=tmp_path / "data"))
    result = _serve(config, {})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "stoic: error: runtimes: the daemon needs a runtime of kind 'edge' (configured: "
        '[\'cpu\']); add [[runtimes]] name = "edge", kind = "edge"'
    ]
    assert not (tmp_path / "data" / "stoic.db").exists()  # refused before the database


@pytest.mark.slow
def test_a_start_up_that_fails_after_the_checks_ends_in_one_error_line(tmp_path: Path) -> None:
    """What fails once the server runs (here: a Kubernetes runtime without
    credentials) still ends in one ``stoic: error:`` line and exit code 2, not in
    uvicorn's traceback and exit code 3."""
    extra = '[[runtimes]]\nname = "cpu"\nkind = "cpu"\nbackend = "kubernetes"\n'
    config = standin_config(tmp_path, tmp_path / "data", '"--batch-delay", "0"', extra=extra)
    result = _serve(config, {"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("stoic: error: kubernetes.kubeconfig: cannot load"), last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"api": {"token": ""}}, "api.token"),
        ({"requester": {"default_mode": "oracle"}}, "requester.default_mode"),
        ({"database": {"url": "bogus://x"}}, "database.url"),
    ],
)
def test_the_settings_refuse_what_no_daemon_can_use(settings: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(**settings)


def test_the_replays_settings_keep_their_freedom() -> None:
    """What the settings take is the daemon's to refuse: the replay runs cloud-only
    configurations, and a token is optional."""
    s = load_settings(runtimes=[{"name": "cpu", "kind": "cpu"}], api={"token": None})
    assert [r.name for r in s.runtimes] == ["cpu"]
    assert s.api.token is None
