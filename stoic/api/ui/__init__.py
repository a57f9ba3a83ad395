"""The operator page: a small web page served by the daemon itself (``GET /ui``).

The people who run an edge site would rather look than read JSON, and a field station
rarely has a Prometheus and a Grafana. So the daemon renders, on the server, what it
decides and why: health, the queue, the last batches with predicted against measured
T_s, each runtime's availability, deployment samples and fits, the cloud seconds spent
today, and an upload form.

* :mod:`~stoic.api.ui.routes`: the routes (page, fragments, batch page, upload, login);
* :mod:`~stoic.api.ui.views`: what the page shows, read from the controller (database
  reads in one worker thread per request, in-memory reads on the loop);
* :mod:`~stoic.api.ui.charts`: the charts, drawn as inline SVG on the server (nothing
  is fetched from the internet: field stations are offline);
* :mod:`~stoic.api.ui.session`: the login cookie (an HMAC of the API token);
* ``templates/`` (Jinja2, autoescaped) and ``static/`` (one stylesheet and ~40 lines of
  JavaScript that refresh the page's parts; the tables work without it).

``docs/operations.md`` ("The operator page") is the user's side of this.
"""
