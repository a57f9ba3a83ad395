"""Where the settings come from (stoic.configfile): which file a command reads, the
default data directory, and ``stoic config show``'s attribution of each value.

Every test builds its own environment and directories: nothing of the machine's
(``~/.config``, ``/etc/stoic``) is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stoic.api import cli as server_cli
from stoic.cli import app
from stoic.configfile import MASK, ConfigFile, find_config, mask, search_path
from stoic.errors import ConfigError
from stoic.settings import Settings, default_data_dir, load_settings


class Places:
    """The five places of the discovery order, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.flag = root / "flag.toml"
        self.named = root / "named.toml"
        self.cwd = root / "work"
        self.xdg = root / "xdg"
        self.home = root / "home"
        self.system = root / "etc" / "stoic" / "stoic.toml"
        self.local = self.cwd / "stoic.toml"
        self.user = self.xdg / "stoic" / "stoic.toml"
        self.cwd.mkdir()
        self.env = {"STOIC_CONFIG": str(self.named), "XDG_CONFIG_HOME": str(self.xdg)}

    def make(self, *paths: Path) -> None:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def find(self, flag: Path | None = None, **env: str) -> ConfigFile | None:
        return find_config(flag, {**self.env, **env}, self.cwd, self.system)


@pytest.fixture
def places(tmp_path: Path) -> Places:
    return Places(tmp_path)


def test_the_first_place_that_exists_wins_in_order(places: Places) -> None:
    p = places
    p.make(p.flag, p.named, p.local, p.user, p.system)
    order = [
        (p.flag, "--config"),
        (p.named, "$STOIC_CONFIG"),
        (p.local, "./stoic.toml"),
        (p.user, "$XDG_CONFIG_HOME"),
        (p.system, "/etc/stoic"),
    ]
    for path, found_by in order:
        flag = p.flag if found_by == "--config" else None
        env = {} if found_by in ("--config", "$STOIC_CONFIG") else {"STOIC_CONFIG": ""}
        assert p.find(flag, **env) == ConfigFile(path, found_by)
        path.unlink()
    assert p.find(STOIC_CONFIG="") is None  # none left: the defaults


def test_xdg_config_home_defaults_to_dot_config(places: Places) -> None:
    p = places
    user = p.home / ".config" / "stoic" / "stoic.toml"
    p.make(user, p.system)
    found = p.find(STOIC_CONFIG="", XDG_CONFIG_HOME="", HOME=str(p.home))
    assert found == ConfigFile(user, "$XDG_CONFIG_HOME")


def test_a_named_file_must_exist(places: Places) -> None:
    places.make(places.local)
    with pytest.raises(ConfigError, match=r"\$STOIC_CONFIG = .*named\.toml: no such"):
        places.find()
    with pytest.raises(ConfigError, match=r"--config .*flag\.toml: no such"):
        places.find(places.flag)


def test_data_dir_defaults_to_the_state_directory_never_the_cwd(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    assert default_data_dir({"HOME": home}) == Path(home, ".local", "state", "stoic")
    assert default_data_dir({"HOME": home, "XDG_STATE_HOME": "/x/state"}) == Path("/x/state/stoic")
    # A relative XDG path is invalid (XDG spec): ignored.
    assert default_data_dir({"HOME": home, "XDG_STATE_HOME": "rel"}) == Path(
        home, ".local", "state", "stoic"
    )
    # systemd's StateDirectory= wins; with several, the first.
    env = {"HOME": home, "XDG_STATE_HOME": "/x", "STATE_DIRECTORY": "/var/lib/stoic:/var/lib/b"}
    assert default_data_dir(env) == Path("/var/lib/stoic")


def test_a_user_with_no_home_gets_the_system_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)  # no HOME, no passwd entry
    assert default_data_dir({}) == Path("/var/lib/stoic")
    found_by = [p.found_by for p in search_path({}, Path("/w"))]
    assert found_by == ["./stoic.toml", "/etc/stoic"]  # no user settings file to look for


def test_settings_take_the_default_data_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert load_settings().data_dir == tmp_path / "state" / "stoic"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "unit"))
    s = load_settings()
    assert s.data_dir == tmp_path / "unit"
    assert s.database_url == f"sqlite:///{tmp_path / 'unit' / 'stoic.db'}"
    assert s.objects_path == tmp_path / "unit" / "objects"
    assert Settings(data_dir=tmp_path / "d").data_dir == tmp_path / "d"  # explicit wins


def test_mask_hides_url_passwords_only() -> None:
    assert mask("postgresql+psycopg://stoic:s3cret@db:5432/stoic") == (
        f"postgresql+psycopg://stoic:{MASK}@db:5432/stoic"
    )
    assert mask(["http://host:8333/x", {"u": "https://a:b@c/"}]) == [
        "http://host:8333/x",
        {"u": f"https://a:{MASK}@c/"},
    ]
    assert mask(3) == 3


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no STOIC_* variables, XDG directories under ``tmp_path``,
    the working directory ``tmp_path/work``; returns it."""
    for name in list(os.environ):
        if name.startswith("STOIC_") or name == "STATE_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr("stoic.configfile.SYSTEM_CONFIG", tmp_path / "etc" / "stoic.toml")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def show(*args: str) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(app, ["config", "show", "--json", *args])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    return {"file": doc["file"], **{e["key"]: e for e in doc["settings"]}}


def test_config_show_names_the_source_of_each_value(
    shell: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (shell / "stoic.toml").write_text(
        '[api]\nport = 8100\nhost = "0.0.0.0"\ntoken = "file-token"\n'
        '[database]\nurl = "postgresql+psycopg://stoic:pw-in-file@db/stoic"\n'
        "[retention]\npackages_days = 7\n"
        "[predictor]\ninquisitor_period_s = 30\n"  # a moved key, under its old name
    )
    monkeypatch.setenv("STOIC_API__PORT", "8200")
    monkeypatch.setenv("STOIC_OBJECTSTORE__S3_SECRET_KEY", "env-secret")
    monkeypatch.setenv("STOIC_KUBERNETES__STORE", '{"bucket": "cloud-b"}')
    doc = show("--port", "8300")

    path = str(shell / "stoic.toml")
    assert doc["file"] == {"path": path, "found_by": "./stoic.toml"}
    expect = {
        "api.port": (8300, "flag --port"),  # flag > env > file
        "api.host": ("0.0.0.0", f"file {path}"),
        "retention.packages_days": (7.0, f"file {path}"),
        "inquisitor.period_s": (30.0, f"file {path}"),
        "kubernetes.store.bucket": ("cloud-b", "env STOIC_KUBERNETES__STORE"),
        "retention.results_days": (None, "default"),
        "data_dir": (str(shell.parent / "state" / "stoic"), "default ($XDG_STATE_HOME/stoic)"),
    }
    for key, (value, source) in expect.items():
        assert (doc[key]["value"], doc[key]["source"]) == (value, source), key
    # Secrets masked: the token, the S3 secret, the password of the database URL.
    assert doc["api.token"]["value"] == "**********"
    assert doc["objectstore.s3_secret_key"] == {
        "key": "objectstore.s3_secret_key",
        "value": "**********",
        "source": "env STOIC_OBJECTSTORE__S3_SECRET_KEY",
    }
    assert doc["database.url"]["value"] == f"postgresql+psycopg://stoic:{MASK}@db/stoic"
    text = CliRunner().invoke(app, ["config", "show"]).output
    for secret in ("file-token", "env-secret", "pw-in-file"):
        assert secret not in text
    assert f"# settings file {path} (found by ./stoic.toml)" in text
    assert "api.port" in text and "# env STOIC_API__PORT" in text


def test_config_show_without_a_file_shows_defaults(shell: Path) -> None:
    doc = show()
    assert doc["file"] is None
    assert doc["api.port"]["source"] == "default"
    assert doc["data_dir"]["value"] == str(shell.parent / "state" / "stoic")


def test_config_show_reads_the_file_stoic_config_names(
    shell: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "elsewhere.yaml"
    named.write_text("controller:\n  max_attempts: 5\n")
    (shell / "stoic.toml").write_text("[controller]\nmax_attempts = 4\n")
    monkeypatch.setenv("STOIC_CONFIG", str(named))
    doc = show()
    assert doc["controller.max_attempts"] == {
        "key": "controller.max_attempts",
        "value": 5,
        "source": f"file {named}",
    }
    monkeypatch.setenv("STOIC_CONFIG", str(tmp_path / "missing.toml"))
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code != 0 and "no such configuration file" in str(result.exception)


def test_an_older_daemons_data_in_the_cwd_is_named(
    shell: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (shell / "stoic-data").mkdir()
    (shell / "stoic-data" / "stoic.db").write_bytes(b"")
    server_cli._legacy_data_dir(load_settings(), {})
    err = capsys.readouterr().err
    assert "./stoic-data holds an older daemon's data" in err
    assert "--data-dir stoic-data" in err
    server_cli._legacy_data_dir(load_settings(), {"data_dir": "--data-dir"})
    assert capsys.readouterr().err == ""


def serve_exit(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stoic.cli", "serve"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_reads_the_file_it_finds(shell: Path) -> None:
    """``stoic serve`` with no --config reads ./stoic.toml: here one that listens
    beyond loopback without a token, which it refuses in one line before it starts."""
    (shell / "stoic.toml").write_text('[api]\nhost = "0.0.0.0"\n')
    env = dict(os.environ)
    done = serve_exit(shell, env)
    assert done.returncode == 2, done.stderr
    assert "api.host = '0.0.0.0' listens beyond loopback" in done.stderr

    done = serve_exit(shell, {**env, "STOIC_CONFIG": str(shell / "nope.toml")})
    assert done.returncode == 2
    assert done.stderr.strip().endswith("nope.toml: no such configuration file")
