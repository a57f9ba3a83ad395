"""The long-running edge controller around the scheduling core.

* :mod:`.controller`: the composition root (build steps, guarded tasks, drain);
* :mod:`.dispatcher`: claims queued batches and hands each to the scheduler;
* :mod:`.recorder`: every measurement to the predictor, the metrics and the store;
* :mod:`.metrics`: the Prometheus metrics the core updates and ``/metrics`` renders;
* :mod:`.demo_classifier`: trains the demo classifier when no model is stored.

The REST layer (:mod:`stoic.api`) sits above this package and only calls into it.
"""
