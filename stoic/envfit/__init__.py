"""Fitting an environment spec to a site's measurements (``stoic env fit``).

The replay's environment specs (``stoic.backends.simulated.EnvSpec``) were written by
hand from published figures. This package fits one to measurements instead: a CSV of
measured components or a daemon's own store, by robust maximum likelihood of the
simulator's own model (each component's module says how), keeping a prior value
wherever the data is too thin, and saying so per parameter. A goodness-of-fit report
compares the measurements with draws of the fitted spec, made by the simulator.

Above the replay in the layers (beside the daemon): it reads the daemon's store, which
the replay's modules may not import.
"""
