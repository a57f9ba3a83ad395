"""What the tests share, one module a concept; no test module imports another
(``tests/test_support.py`` holds them to it).

- :mod:`tests.support.paths`: the repository, the shared folder, the stand-in function;
- :mod:`tests.support.images`: images and archives to upload (with a camera's EXIF);
- :mod:`tests.support.csvfiles`: a malformed CSV refused, naming line, column and problem;
- :mod:`tests.support.formats`: the camera-trap formats' own validators, offline;
- :mod:`tests.support.function`: what a function call answers;
- :mod:`tests.support.html`: a tiny DOM of a page, to assert on elements and text;
- :mod:`tests.support.net`: free ports and waiting for a server to answer;
- :mod:`tests.support.settings`: settings for an in-process daemon or a ``stoic serve``;
- :mod:`tests.support.daemon`: the daemon in-process behind an httpx client, or under
  uvicorn on a loopback port;
- :mod:`tests.support.client`: a ``stoic serve`` child's batches, submitted and waited for;
- :mod:`tests.support.browser`: Chromium driven by Selenium, or a skip where it is absent;
- :mod:`tests.support.html`: a page's HTML parsed into a small tree of elements;
- :mod:`tests.support.controller`: a controller started around a block, a queued batch
  for it, bounded waits;
- :mod:`tests.support.processes`: ``stoic serve`` as a child process, and its clean-up;
  a command's one-line refusal;
- :mod:`tests.support.uplink`: a loopback "far side" for the uplink check;
- :mod:`tests.support.metrics`: expositions and PromQL read, the function server's ``/metrics``;
- :mod:`tests.support.core`: the scheduling core's fakes (predictor, recorder, requester);
- :mod:`tests.support.inquisitor`: an inquisitor on fakes (the rig);
- :mod:`tests.support.pg`: a private PostgreSQL cluster;
- :mod:`tests.support.s3`: a SeaweedFS S3 server on loopback;
- :mod:`tests.support.kubelet`: a kubelet for the kmock emulator that runs real pods.
"""
