"""keras-autolr: no-tuning learning-rate warmup and decay for Keras 3.

The pure core (`AutoLRController`, `MinimumDetector`) imports without Keras
or TensorFlow; the Keras names (`AutoLR`, `AdamP`, `LAMB`, `AutoLRSchedule`)
are imported on first use, and so is `plot` (the figure of a run's LR and
loss, which needs matplotlib: `pip install keras-autolr[plot]`).
"""

import importlib

from keras_autolr.controller import AutoLRController
from keras_autolr.detector import MinimumDetector

__version__ = "0.2.0"

_LAZY = {
    "AutoLR": "keras_autolr.callback",
    "AutoLRSchedule": "keras_autolr.keras_schedule",
    "AdamP": "keras_autolr.optimizers",
    "LAMB": "keras_autolr.optimizers",
    "plot": "keras_autolr.plotting",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_autolr' has no attribute {name!r}")


__all__ = ["AutoLRController", "MinimumDetector", "__version__", *_LAZY]
