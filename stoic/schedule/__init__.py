"""The edge controller's brain (paper §3.6–3.7): what the paper calls the requester and
the inquisitor, and the policies between the predictor and the runtimes.

* :mod:`.scheduler`: the one per-batch path (estimate → decide → run), and bootstrapping;
* :mod:`.policy`: selector, duplicator's lagging decision, baselines — pure functions;
* :mod:`.requester`: executes a plan, holding a :mod:`.legs` runner and a :mod:`.duplicator`;
* :mod:`.legs`: one runtime's measured steps (deploy with back-off, upload, warm, invoke);
* :mod:`.duplicator`: the speculative edge raced against a cloud pod;
* :mod:`.recorder`: where measurements go;
* :mod:`.inquisitor`, :mod:`.availability`: background deployment probes; which runtimes
  may be chosen.

The daemon (:mod:`stoic.daemon`) and the replay (:mod:`stoic.replay`) both drive this
package; nothing in it knows which of the two it runs in.
"""
