"""The ``stoic`` command line: one root, one sub-command group per area.

Each area keeps its commands beside its code (``stoic/<area>/cli.py``) and is mounted
here. Heavy imports (TensorFlow, FastAPI) happen inside commands, so ``stoic --help``
stays fast. Every :class:`stoic.errors.StoicError` becomes one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from stoic import __version__
from stoic.errors import StoicError

app = typer.Typer(
    name="stoic",
    help="Edge-cloud scheduler for machine learning on serverless runtimes (STOIC).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stoic {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """stoic: predict where each batch finishes first, run it there, learn from it."""


# Sub-command groups (each area adds its own line here).
from stoic.replay.cli import env_app, replay_app, workload_app  # noqa: E402

app.add_typer(replay_app, name="replay")
app.add_typer(workload_app, name="workload")
app.add_typer(env_app, name="env")
from stoic.envfit.cli import fit as env_fit  # noqa: E402

env_app.command("fit")(env_fit)
from stoic.predict.cli import evaluate_app  # noqa: E402
from stoic.replay.evaluate import evaluate_predictor  # noqa: E402

evaluate_app.command("predictor")(evaluate_predictor)
app.add_typer(evaluate_app, name="evaluate")
from stoic.function.cli import app as model_app  # noqa: E402

app.add_typer(model_app, name="model")

from stoic.api.cli import register as register_server_commands  # noqa: E402
from stoic.client import register as register_client_commands  # noqa: E402
from stoic.client import register_model_commands  # noqa: E402

register_server_commands(app)
register_client_commands(app)
register_model_commands(model_app)
from stoic.watch.cli import register as register_watch_command  # noqa: E402

register_watch_command(app)
from stoic.operate import register as register_operator_commands  # noqa: E402

register_operator_commands(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except StoicError as exc:
        print(f"stoic: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
