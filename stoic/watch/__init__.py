"""``stoic watch``: folder ingest for camera traps, as a client of a running daemon.

- :mod:`stoic.watch.scan`: the images under the folders, their deployment, and when a
  file has stopped changing;
- :mod:`stoic.watch.state`: what was planned, sent and done (SQLite, survives ``kill -9``);
- :mod:`stoic.watch.watcher`: the steps (scan, plan, send, poll), on a clock and a
  daemon it is given;
- :mod:`stoic.watch.cli`: the command, the REST client and the wake-ups.
"""
