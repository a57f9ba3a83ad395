"""The edge controller's brain (paper §3.6–3.7): what the paper calls the requester and
the inquisitor, and the policies between the predictor and the runtimes, in rooms:

* :mod:`.scheduler`: the one per-batch path (estimate → decide → run), and bootstrapping;
* :mod:`.decide`: the policies (selector, duplicator's lagging decision, share's choice of
  pods, baselines): pure functions of estimates;
* :mod:`.execute`: running a plan: the requester, the measured legs (the only code that
  calls a backend's deploy, upload or invoke), the duplicator's race, the recorders;
* :mod:`.share`: share mode: the pure board and fluid forecast, and the asyncio session;
* :mod:`.probe`: the inquisitor's background probes, and which runtimes may be chosen.

The daemon (:mod:`stoic.daemon`) and the replay (:mod:`stoic.replay`) both drive this
package; nothing in it knows which of the two it runs in. Import contracts in
``pyproject.toml`` keep the rooms apart (docs/architecture.md, "Layers").
"""
