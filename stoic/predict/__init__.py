"""Response-time prediction (paper section 3.4): T_s = T_t + T_d + T_p per runtime.

* :mod:`.deployment` — T_d: median/mean sliding window (calibrated window), AutoReg.
* :mod:`.processing` — T_p: RANSAC around Bayesian ridge on batch size.
* :mod:`.transfer` — T_t: bytes over the median of recent uplink bandwidths.
* :mod:`.predictor` — :class:`Predictor`, the combination the scheduler calls.

The names below are imported lazily, so that ``stoic --help`` (which imports
:mod:`.cli` from here) does not pay for numpy, bottleneck and statsmodels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stoic.predict.deployment import DeploymentModel as DeploymentModel
    from stoic.predict.deployment import window_mae as window_mae
    from stoic.predict.predictor import Predictor as Predictor
    from stoic.predict.processing import LinearFit as LinearFit
    from stoic.predict.processing import ProcessingModel as ProcessingModel
    from stoic.predict.processing import fit_processing as fit_processing
    from stoic.predict.transfer import BandwidthMonitor as BandwidthMonitor

_WHERE = {
    "BandwidthMonitor": "transfer",
    "DeploymentModel": "deployment",
    "LinearFit": "processing",
    "Predictor": "predictor",
    "ProcessingModel": "processing",
    "fit_processing": "processing",
    "window_mae": "deployment",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"stoic.predict.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'stoic.predict' has no attribute {name!r}")
