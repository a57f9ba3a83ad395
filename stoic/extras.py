"""Optional extras: which feature needs which ``pip install 'stoic[...]'``, in one place.

The base install is what the edge controller and the replay need (``stoic serve`` with
runtimes whose function runs elsewhere, ``stoic replay``, ``submit``/``status``,
``stoic evaluate deployment``). Everything only some users need is an *extra* in
``pyproject.toml``: TensorFlow for the function (≈ 1.3 GB), boto3 for S3, psycopg for
PostgreSQL, statsmodels and matplotlib for the AutoReg analysis and the plots, the
Kubernetes client for the Kubernetes backend, SciPy for ``stoic env fit``.

Code that needs an extra imports it *inside* the function that needs it, after
:func:`require` (cheap: :func:`importlib.util.find_spec` looks for the module without
importing it) or inside :func:`needs` (turns the ``ModuleNotFoundError`` of one of the
extra's modules into the error). Either way a missing extra is a
:class:`~stoic.errors.MissingExtra`: one line that names the feature and the extra, which
the CLI prints and exits 2 on, never a traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from stoic.errors import MissingExtra

EXTRAS: dict[str, tuple[str, ...]] = {
    # tensorflow-cpu in the function extra; the GPU image's base image has `tensorflow`.
    # Both provide the modules `tensorflow` and `keras`.
    "function": ("tensorflow", "keras"),
    "s3": ("boto3", "botocore"),
    "postgres": ("psycopg",),
    "analysis": ("statsmodels", "matplotlib"),
    "kubernetes": ("kubernetes",),
    # file system events for `stoic watch` (without them it scans on a timer)
    "watch": ("watchfiles",),
    # `stoic env fit` (the replay's normal CDF and quantile are stoic/normal.py)
    "fit": ("scipy",),
    # the calibration's kernel (stoic/predict/medians.py); bottleneck's rows without it
    "fast": ("numba",),
}
"""The top-level modules each extra provides (``pyproject.toml`` lists the packages)."""


def _modules(extra: str, modules: tuple[str, ...]) -> tuple[str, ...]:
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {sorted(EXTRAS)}")
    return modules or EXTRAS[extra]


def missing_module(extra: str, *modules: str) -> str | None:
    """The first of ``modules`` (default: all of the extra's) that is not installed."""
    for name in _modules(extra, modules):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def installed(extra: str, *modules: str) -> bool:
    """Whether ``modules`` (default: every module of ``extra``) can be imported."""
    return missing_module(extra, *modules) is None


def require(extra: str, feature: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` unless ``modules`` of ``extra`` are installed.

    ``feature`` is what the user asked for, as they know it (``"stoic model push"``,
    ``"objectstore.kind = 's3'"``); ``modules`` narrows the check to what the feature
    imports (``require("analysis", "the plots", "matplotlib")``).
    """
    name = missing_module(extra, *modules)
    if name is not None:
        raise MissingExtra(extra, feature, name)


@contextmanager
def needs(extra: str, feature: str) -> Iterator[None]:
    """Turn a ``ModuleNotFoundError`` for one of ``extra``'s modules into
    :class:`MissingExtra`; any other import error passes through unchanged."""
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in EXTRAS.get(extra, ()):
            raise MissingExtra(extra, feature, top) from None
        raise
