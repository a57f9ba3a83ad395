"""stoic: an edge-cloud scheduler for machine learning on serverless runtimes.

After "STOIC: Serverless Teleoperable Hybrid Cloud for Machine Learning Applications
on Edge Device" (Zhang, Krintz, Wolski). See ``docs/architecture.md`` for the map.
"""

__version__ = "0.1.0"
