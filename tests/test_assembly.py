"""One core, assembled once: the daemon's and the replay's cores are wired alike.

The daemon's core is the one a started :class:`Controller` holds; the replay's is the
one :func:`run_replay` ran its batches on. :func:`graph` describes a core by what does
not depend on the world (the types of its parts, which part holds which, the recorder
chain, the uplink wiring, the policy's options), so two cores from the same settings
must have equal graphs.
"""

from __future__ import annotations

import ast
import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.clock import LoopClock
from stoic.daemon.controller import Controller
from stoic.replay.runner import ReplayConfig, run_replay
from stoic.schedule.assembly import Core, Probing, build_core
from stoic.schedule.execute.recorder import PredictorRecorder
from stoic.schedule.probe.inquisitor import ProcessingClock
from stoic.schedule.scheduler import ObservationCounter
from stoic.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PARTS = (
    "predictor",
    "availability",
    "recorder",
    "observed",
    "legs",
    "requester",
    "budget",
    "scheduler",
    "inquisitor",
    "uplink",
)
CORE_CLASSES = {"Predictor", "LegRunner", "Requester", "Scheduler", "Inquisitor"}


def settings(tmp_path: Path) -> Settings:
    """Both worlds' settings: the inquisitor on, with an uplink check (the daemon checks
    a URL, the replay its simulated link), on an hourly tick the test never reaches."""
    return Settings(
        data_dir=tmp_path / "data",
        controller={"inquisitor": True, "demo_model": False, "bootstrap": False},
        inquisitor={
            "period_s": 3600.0,
            "uplink_check_url": "http://127.0.0.1:9/",
            "uplink_check_timeout_s": 0.1,
        },
    )


def graph(core: Core) -> dict[str, Any]:
    """What a core is, as far as the world it runs in does not matter."""
    chain = core.recorder.recorders
    inq = core.inquisitor
    assert inq is not None
    return {
        "types": {name: type(getattr(core, name)).__name__ for name in PARTS},
        "chain": [
            "recorder(predictor)" if getattr(r, "predictor", None) is core.predictor else type(r)
            for r in chain
        ],
        "refers": {
            "legs.recorder": core.legs.recorder is core.recorder,
            "legs.availability": core.legs.availability is core.availability,
            "requester.legs": core.requester.legs is core.legs,
            "duplicator.legs": core.requester.duplicator.legs is core.legs,
            "sharer.legs": core.requester.sharer.legs is core.legs,
            "scheduler.predictor": core.scheduler.predictor is core.predictor,
            "scheduler.requester": core.scheduler.requester is core.requester,
            "scheduler.availability": core.scheduler.availability is core.availability,
            "scheduler.observed": core.scheduler.observed is core.observed is chain[1],
            "inquisitor.legs": inq.legs is core.legs,
            "inquisitor.availability": inq.availability is core.availability,
            "inquisitor.worth": inq.worth == core.scheduler.worth_probing,
            "inquisitor.deploy_worth": inq.deploy_worth == core.scheduler.worth_deploy_probe,
            "legs.meter": core.legs.meter == core.budget.charge,
            "scheduler.budget": core.scheduler.budget is core.budget,
            "inquisitor.ledger": inq.ledger is core.scheduler.ledger,
            "inquisitor.measured": inq._last_processing is getattr(chain[-1], "last", None),
        },
        "uplink": {
            "predictor": core.predictor.uplink is core.uplink,
            "inquisitor": inq.uplink is not None and inq.uplink[1] is core.uplink,
            "watched": core.uplink is not None,
        },
        # The one named difference: only the replay knows the truth the oracle is given.
        "policy": replace(core.scheduler.policy_options, oracle=None),
        "runtimes": list(core.legs.runtimes),
    }


def daemon_core(tmp_path: Path) -> Core:
    async def started() -> Core:
        fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
        ctl = Controller(settings(tmp_path), backends={"local": fake})
        await ctl.start()
        try:
            return ctl.core
        finally:
            await ctl.stop()

    return asyncio.run(started())


def replay_core(tmp_path: Path) -> Core:
    cfg = ReplayConfig(batches=2, probes="full", settings=settings(tmp_path))
    return run_replay(cfg).core


def test_the_daemon_and_the_replay_build_the_same_core(tmp_path: Path) -> None:
    replay, daemon = replay_core(tmp_path), daemon_core(tmp_path)
    replayed = graph(replay)
    assert graph(daemon) == replayed
    assert daemon.scheduler.policy_options.oracle is None
    assert replay.scheduler.policy_options.oracle is not None
    assert all(replayed["refers"].values()) and all(replayed["uplink"].values())
    assert replayed["chain"] == ["recorder(predictor)", ObservationCounter, ProcessingClock]


def test_a_core_wired_otherwise_has_another_graph(tmp_path: Path) -> None:
    s = settings(tmp_path)
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))

    async def up() -> bool:
        return True

    def core(probing: Probing) -> Core:
        return build_core(
            s,
            {"local": fake},
            LoopClock(0.0),
            make_recorder=PredictorRecorder,
            uplink_check=up,
            probing=probing,
        )

    assert graph(core(Probing.LOOP)) == graph(core(Probing.LOOP))
    warmup = graph(core(Probing.WARMUP))  # the window replay: no wait priced
    assert warmup["uplink"]["predictor"] is False
    assert warmup != graph(core(Probing.LOOP))


def constructed(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            if name in CORE_CLASSES:
                names.add(name)
    return names


def test_only_the_assembly_constructs_the_core() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(found)
        for path in sorted((REPO / "stoic").rglob("*.py"))
        if path.name != "assembly.py" or path.parent.name != "schedule"
        if (found := constructed(ast.parse(path.read_text(), str(path))))
    }
    assert offenders == {}
    assert constructed(ast.parse("Scheduler(p)\nx.LegRunner(a)")) == {"Scheduler", "LegRunner"}


def test_the_options_defaults_are_the_settings_defaults() -> None:
    """A part built without build_core (a test, a benchmark) behaves as a default daemon."""
    from stoic.schedule.assembly import (
        inquisitor_options,
        leg_options,
        scheduler_options,
        share_options,
    )
    from stoic.schedule.execute.legs import LegOptions
    from stoic.schedule.probe.inquisitor import InquisitorOptions
    from stoic.schedule.scheduler import SchedulerOptions
    from stoic.schedule.share.session import ShareOptions

    s = Settings()
    assert leg_options(s) == LegOptions()
    assert share_options(s) == ShareOptions()
    assert inquisitor_options(s) == InquisitorOptions()
    assert scheduler_options(s) == SchedulerOptions()
    assert leg_options(Settings(requester={"warmup": False})).warmup is False
