"""Results in the formats camera-trap people already use.

- :mod:`stoic.export.records`: one image's result, flat and typed (what every format reads);
- :mod:`stoic.export.labels`: what a label means (animal, person, vehicle, blank; taxon);
- :mod:`stoic.export.meta`: what a site knows and stoic cannot (``--meta``);
- :mod:`stoic.export.megadetector`: the MegaDetector batch output file (Timelapse, AddaxAI);
- :mod:`stoic.export.camtrap_dp`: a Camtrap DP package (GBIF, Agouti, camtrapR);
- :mod:`stoic.export.csvfile`: one CSV row per image.

Pure functions of :class:`~stoic.export.records.ImageRecord` values: the daemon's
results route and the ``stoic export`` client write the same bytes.
"""
