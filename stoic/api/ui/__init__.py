"""The operator page: a small web page served by the daemon itself (``GET /ui``).

The people who run an edge site would rather look than read JSON, and a field station
rarely has a Prometheus and a Grafana. So the daemon renders, on the server, what it
decides and why: health, the queue, the last batches with predicted against measured
T_s, each runtime's availability, deployment samples and fits, the cloud seconds spent
today, and an upload form.

* :mod:`~stoic.api.ui.routes`: the routes (page, fragments, batch page, upload, login);
* :mod:`~stoic.api.ui.results`: a batch's results view (thumbnails, filters, downloads);
* :mod:`~stoic.api.ui.views`: what the page shows, read from the controller (in-memory
  reads on the loop, database reads and charts in a worker thread);
* :mod:`~stoic.api.ui.render`: renders off the loop, shared by every poller for
  ``ui.render_cache_s``;
* :mod:`~stoic.api.ui.charts`: the charts, drawn as inline SVG on the server (nothing
  is fetched from the internet: field stations are offline);
* :mod:`~stoic.api.ui.session`: the login sessions (server-side, behind a random id);
* :mod:`~stoic.api.ui.throttle`: failed logins, throttled per client;
* ``templates/`` (Jinja2, autoescaped) and ``static/`` (one stylesheet and ~40 lines of
  JavaScript that refresh the page's parts; the tables work without it).

``docs/operations.md`` ("The operator page") is the user's side of this.
"""
