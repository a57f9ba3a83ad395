"""Which settings file a command reads, and where each effective setting came from.

**Discovery.** ``stoic serve``, ``stoic model ...`` and ``stoic config show`` read one
settings file, the first of these that exists (:func:`find_config`):

1. ``--config FILE``;
2. ``$STOIC_CONFIG``;
3. ``./stoic.toml`` (the working directory);
4. ``$XDG_CONFIG_HOME/stoic/stoic.toml`` (``~/.config/stoic/stoic.toml`` when unset);
5. ``/etc/stoic/stoic.toml`` (systemd's ``ConfigurationDirectory=stoic``).

A file named on purpose (the flag, ``$STOIC_CONFIG``) must exist: a typo is an error,
not a silent fall-through to another file. With none found, the defaults and the
environment apply. Why this order: the narrower the scope, the stronger (one command,
one shell, one directory, one user, the machine), as git and most daemons do it.

**Provenance.** ``stoic config show`` prints every effective setting and its source:
``default``, the file, the environment variable or the flag (:func:`explain`), with
secrets masked (:func:`mask`): ``SecretStr`` values and the password of a URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_settings import EnvSettingsSource

from stoic.errors import ConfigError
from stoic.settings import MOVED, Settings

SYSTEM_CONFIG = Path("/etc/stoic/stoic.toml")
"""The machine's settings file (the systemd unit's ``ConfigurationDirectory``)."""

MASK = "********"

_URL_PASSWORD = re.compile(r"^(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)[^@/]*(?P<tail>@.*)$")


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The settings file a command reads, and what found it (``--config``,
    ``$STOIC_CONFIG``, ``./stoic.toml``, ``$XDG_CONFIG_HOME`` or ``/etc/stoic``)."""

    path: Path
    found_by: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One effective setting: its dotted key, its value as JSON (masked) and its source."""

    key: str
    value: Any
    source: str


def search_path(
    env: Mapping[str, str], cwd: Path, system: Path = SYSTEM_CONFIG
) -> list[ConfigFile]:
    """The places looked at, in order, after ``--config``."""
    places = []
    named = env.get("STOIC_CONFIG", "")
    if named:
        places.append(ConfigFile(Path(named), "$STOIC_CONFIG"))
    places.append(ConfigFile(cwd / "stoic.toml", "./stoic.toml"))
    xdg = env.get("XDG_CONFIG_HOME", "")
    home = env.get("HOME") or os.path.expanduser("~")
    user = Path(xdg) if os.path.isabs(xdg) else Path(home, ".config")
    if user.is_absolute():  # a user with no home (a container's UID) has none
        places.append(ConfigFile(user / "stoic" / "stoic.toml", "$XDG_CONFIG_HOME"))
    places.append(ConfigFile(system, "/etc/stoic"))
    return places


def find_config(
    flag: Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    system: Path = SYSTEM_CONFIG,
) -> ConfigFile | None:
    """The settings file to read: ``flag``, else the first of :func:`search_path` that
    exists; None when there is none. Raises :class:`ConfigError` when ``flag`` or
    ``$STOIC_CONFIG`` names a file that does not exist."""
    if flag is not None:
        if not flag.is_file():
            raise ConfigError(f"--config {flag}: no such configuration file")
        return ConfigFile(flag, "--config")
    for place in search_path(os.environ if env is None else env, cwd or Path.cwd(), system):
        if place.path.is_file():
            return place
        if place.found_by == "$STOIC_CONFIG":
            raise ConfigError(f"$STOIC_CONFIG = {place.path}: no such configuration file")
    return None


def mask(value: Any) -> Any:
    """``value`` (JSON) with the password of every URL in it replaced by :data:`MASK`
    (``SecretStr`` values arrive masked already: pydantic dumps them as stars)."""
    if isinstance(value, str):
        m = _URL_PASSWORD.match(value)
        return f"{m['head']}{MASK}{m['tail']}" if m else value
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    return value


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every setting's key path (sections are walked; lists and tables are leaves)."""
    for name, info in model.model_fields.items():
        key = (*prefix, info.alias or name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, key)
        else:
            yield key


def _moved(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the old keys of :data:`~stoic.settings.MOVED` at their new places
    (quietly: loading the settings has warned already)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (old_section, old_key), (new_section, new_key) in MOVED.items():
        section = out.get(old_section)
        if isinstance(section, dict) and old_key in section:
            value = section.pop(old_key)
            target = out.setdefault(new_section, {})
            if isinstance(target, dict):
                target.setdefault(new_key, value)
    return out


def _has(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _get(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for part in path:
        node = node[part]
    return node


def _env_name(path: tuple[str, ...], env: Mapping[str, str]) -> str:
    """The variable that set ``path``: its own (``STOIC_API__PORT``), or a section's
    given as JSON (``STOIC_API``), or a moved key's old name."""
    upper = {k.upper(): k for k in env}
    for n in range(len(path), 0, -1):
        name = "STOIC_" + "__".join(path[:n]).upper()
        if name in upper:
            return upper[name]
    for (old_section, old_key), (new_section, new_key) in MOVED.items():
        if path == (new_section, new_key):
            name = f"STOIC_{old_section}__{old_key}".upper()
            if name in upper:
                return upper[name]
    return "STOIC_" + "__".join(path).upper()


def _default_source(path: tuple[str, ...], env: Mapping[str, str]) -> str:
    if path == ("data_dir",):
        if env.get("STATE_DIRECTORY"):
            return "default ($STATE_DIRECTORY)"
        if os.path.isabs(env.get("XDG_STATE_HOME", "")):
            return "default ($XDG_STATE_HOME/stoic)"
        return "default (~/.local/state/stoic)"
    return "default"


def explain(
    settings: Settings,
    *,
    file: ConfigFile | None,
    file_values: Mapping[str, Any],
    flags: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> list[Entry]:
    """Every effective setting of ``settings`` with its source, strongest first as
    :func:`~stoic.settings.load_settings` applies them: a flag (``flags``: dotted key →
    flag name), the environment, the file (``file_values``, as read), the default."""
    environ = os.environ if env is None else env
    from_env = _moved(EnvSettingsSource(Settings)())
    from_file = _moved(file_values)
    effective = settings.model_dump(mode="json", by_alias=True)
    entries = []
    for path in _leaves(Settings):
        key = ".".join(path)
        if key in flags:
            source = f"flag {flags[key]}"
        elif _has(from_env, path):
            source = f"env {_env_name(path, environ)}"
        elif file is not None and _has(from_file, path):
            source = f"file {file.path}"
        else:
            source = _default_source(path, environ)
        entries.append(Entry(key, mask(_get(effective, path)), source))
    return entries
