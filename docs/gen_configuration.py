"""Write docs/configuration.md from the settings model (``stoic.settings.Settings``).

    .venv/bin/python docs/gen_configuration.py > docs/configuration.md

``tests/test_controller.py::test_configuration_doc_is_in_sync`` fails when the page
and the model disagree, so a new setting cannot go undocumented.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stoic.settings import MOVED, RuntimeSettings, Settings, default_runtimes

HEADER = """\
# Configuration

Every setting of stoic, generated from `stoic/settings.py` by
`docs/gen_configuration.py` (a test keeps this page in sync).

Sources, strongest first: command-line flags (`stoic serve --host/--port/--data-dir`),
environment variables (`STOIC_` prefix, `__` between levels, e.g.
`STOIC_API__PORT=9000`; lists and tables as JSON, e.g.
`STOIC_RUNTIMES='[{"name": "edge", "kind": "edge"}]'`), a TOML or YAML file, then the
defaults below. A bad value stops the daemon at start-up with one line per bad key
naming it and the allowed range.

The settings file is the first of these that exists (`stoic serve`, `stoic model ...`,
`stoic config show`; `stoic/configfile.py`):

1. `--config FILE`;
2. `$STOIC_CONFIG`;
3. `./stoic.toml`;
4. `$XDG_CONFIG_HOME/stoic/stoic.toml` (`~/.config/stoic/stoic.toml`);
5. `/etc/stoic/stoic.toml` (the systemd unit's configuration directory).

A file named by `--config` or `$STOIC_CONFIG` must exist. `stoic config show` (same
flags as `stoic serve`) prints every effective setting and where it came from —
`default`, `file PATH`, `env STOIC_...` or `flag --port` — with secrets masked
(`--json` for a script).

`data_dir` (the database, the objects, the logs) defaults to the directory systemd
made for the unit (`StateDirectory=stoic`: `$STATE_DIRECTORY`, `/var/lib/stoic`), else
to `$XDG_STATE_HOME/stoic` (`~/.local/state/stoic`); never the working directory.

Some values need an optional extra (README, "Install"): runtimes with
`backend = "local"` (the default; they run the TensorFlow function on this machine)
need `function` unless `local.command` runs another server; `backend = "kubernetes"`
needs `kubernetes`; `objectstore.kind = "s3"` needs `s3`; a `postgresql+psycopg://`
`database.url` needs `postgres`; `predictor.deployment_method = "autoreg"` needs
`analysis`. `stoic serve` checks them before it starts and names what is missing
(`pip install 'stoic[function]'`).

Units: `*_s` seconds, `*_days` days, `*_bytes`/`bytes` bytes, `*_bps` bytes per second, `*_mib`
mebibytes, `*_millicores` thousandths of a CPU core; sizes of windows and histories are
counts of samples.

Example `stoic.toml` (edge + one cloud CPU runtime, a token, a bigger batch limit):

```toml
data_dir = "/var/lib/stoic"

[api]
host = "0.0.0.0"
port = 8000
token = "change-me"
max_batch_images = 5000

[controller]
drain_grace_s = 60

[[runtimes]]
name = "edge"
kind = "edge"

[[runtimes]]
name = "cpu"
kind = "cpu"
backend = "kubernetes"
```
"""


def _unit(name: str) -> str:
    if name.endswith("_s"):
        return "s"
    if name.endswith("_days"):
        return "days"
    if name.endswith("_bps"):
        return "bytes/s"
    if name.endswith("bytes"):
        return "bytes"
    if name.endswith("_mib"):
        return "MiB"
    if name.endswith("_millicores"):
        return "millicores"
    return ""


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "doc_default" in extra:  # computed where it runs
        return str(extra["doc_default"])
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    if hasattr(value, "value"):
        value = value.value
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return f"{len(value)} entries (see below)"
    text = json.dumps(value, default=str)
    return f"`{text}`"


def _env(key: str) -> str:
    return "STOIC_" + key.upper().replace(".", "__")


def _rows(model: type[BaseModel], path: str, env: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        key = info.alias or name
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _rows(ann, f"{path}{key}.", f"{env}{key.upper()}__")
            continue
        desc = (info.description or "").replace("|", "\\|")
        yield (
            f"| `{path}{key}` | {_type(ann)} | {_unit(name)} | {_default(info)} | "
            f"`{env}{key.upper()}` | {desc} |"
        )


def render() -> str:
    out = [HEADER, "## Settings\n", "| key | type | unit | default | environment | description |"]
    out.append("|---|---|---|---|---|---|")
    out.extend(_rows(Settings, "", "STOIC_"))
    out.append("\n## Moved settings\n")
    out.append(
        "These keys moved to the section of the component that reads them. Their old "
        "names (in a file or the environment) still work for one release, with a "
        "warning naming the new key; a new key given too wins.\n"
    )
    out.append("| old key | old environment | new key | new environment |")
    out.append("|---|---|---|---|")
    for (old_section, old_key), (new_section, new_key) in MOVED.items():
        old, new = f"{old_section}.{old_key}", f"{new_section}.{new_key}"
        out.append(f"| `{old}` | `{_env(old)}` | `{new}` | `{_env(new)}` |")
    out.append("\n## Each entry of `runtimes`\n")
    out.append("| key | type | unit | default | description |")
    out.append("|---|---|---|---|---|")
    for name, info in RuntimeSettings.model_fields.items():
        out.append(
            f"| `{name}` | {_type(info.annotation)} | {_unit(name)} | {_default(info)} | "
            f"{(info.description or '').replace('|', chr(92) + '|')} |"
        )
    out.append("\nDefault runtimes (the paper's four scenarios and its published fits):\n")
    out.append(
        "| name | kind | gpus | backend | prior_deploy_s | prior_per_image_s | prior_fixed_s |"
    )
    out.append("|---|---|---|---|---|---|---|")
    for r in default_runtimes():
        out.append(
            f"| {r.name} | {r.kind.value} | {r.gpus} | {r.backend} | {r.prior_deploy_s} | "
            f"{r.prior_per_image_s} | {r.prior_fixed_s} |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
