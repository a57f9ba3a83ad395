"""The replay (paper §3.5 and §4): workload generator, simulated environment, scoring.

``stoic replay`` drives the daemon's own predictor, policy, requester, inquisitor and
scheduler against :mod:`stoic.backends.simulated` in virtual time (``looptime``), and
scores the decisions against the ground truth of every runtime (the audit).
"""
