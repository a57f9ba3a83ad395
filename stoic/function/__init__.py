"""The serverless application of the paper (section 4.1): camera-trap image classification.

* :mod:`stoic.function.handler`: ``handler(event, context)`` (kubeless signature) and the
  :class:`~stoic.function.handler.Function` behind it (classify, train).
* :mod:`stoic.function.server`: the same function behind kubeless' HTTP routes
  (``python -m stoic.function.server``).
* :mod:`stoic.function.classifier`: the CNN, training with up-sampling, the offline demo data.
* :mod:`stoic.function.contract`: a model's label map and preprocessing, checked at push.
* :mod:`stoic.function.modelfile`: Keras files (safe mode on) and SavedModels.
* :mod:`stoic.function.folder`: training on a folder of ``<label>/<image>`` files.
* :mod:`stoic.function.push`: a model trained anywhere, checked and stored as a version.
* :mod:`stoic.function.pipeline`: a call's read, decode and classify stages, overlapped
  and bounded.
* :mod:`stoic.function.workers`: one worker per device draining a shared source, with
  a compiled model call and a batch size measured per device.

Importing this package is cheap: TensorFlow is imported on first use only.
"""
