"""Runtime backends: where a batch physically runs (local processes, Kubernetes, simulation)."""
