"""One measurer: no module but :mod:`stoic.schedule.execute.legs` calls a backend.

Samples are taken where a backend is called; a second caller would be a second,
diverging measurement (issue 21, "One measurer"). The check reads the AST of every
module under ``stoic/``: a call ``<receiver>.deploy(...)``, ``.upload(...)`` or
``.invoke(...)`` is a backend call unless the receiver is plainly something else (the
measurer itself: ``legs``/``self.legs``), and only the measurer and the backends
package (which implements the calls, and wraps one backend in another) may make one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import stoic

BACKEND_CALLS = frozenset({"deploy", "upload", "invoke"})
ALLOWED = ("stoic/schedule/execute/legs.py", "stoic/backends/")
ROOT = Path(stoic.__file__).resolve().parent.parent


def _receiver(node: ast.expr) -> str:
    """The dotted name a call is made on (``self.legs``, ``backend``), or ""."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _receiver(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    if isinstance(node, ast.Call | ast.Subscript):
        return _receiver(node.func if isinstance(node, ast.Call) else node.value)
    return ""


def _is_measurer(receiver: str) -> bool:
    return receiver.rsplit(".", 1)[-1] == "legs"


def backend_calls(source: str) -> list[str]:
    """``"line: receiver.method"`` for every backend call in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr not in BACKEND_CALLS:
            continue
        receiver = _receiver(node.func.value)
        if not _is_measurer(receiver):
            found.append(f"{node.lineno}: {receiver}.{node.func.attr}")
    return found


def test_only_the_measurer_calls_a_backend() -> None:
    offenders = {}
    for path in sorted((ROOT / "stoic").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(ALLOWED):
            continue
        calls = backend_calls(path.read_text())
        if calls:
            offenders[rel] = calls
    assert offenders == {}


def test_the_check_catches_a_backend_called_by_hand() -> None:
    snippet = """
async def label(self, p, job, upload):
    backend = backend_for(self.legs.backends, p.leg.runtime)
    await self.legs.deploy(job, p.leg)
    inv = await backend.invoke(p.leg.deployment, job, upload)
    await self.backends["gpu1"].upload(p.leg.runtime, job)
    await get_backend().deploy(runtime, timeout_s=1.0)
"""
    assert backend_calls(snippet) == [
        "5: backend.invoke",
        "6: self.backends.upload",
        "7: get_backend.deploy",
    ]
