"""The serverless application of the paper (section 4.1): camera-trap image classification.

* :mod:`stoic.function.handler`: ``handler(event, context)`` (kubeless signature) and the
  :class:`~stoic.function.handler.Function` behind it (classify, train).
* :mod:`stoic.function.server`: the same function behind kubeless' HTTP routes
  (``python -m stoic.function.server``).
* :mod:`stoic.function.classifier`: the CNN, training with up-sampling, the offline demo data.
* :mod:`stoic.function.workers`: one worker per GPU draining a shared queue.

Importing this package is cheap: TensorFlow is imported on first use only.
"""
