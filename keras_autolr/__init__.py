"""keras-autolr: no-tuning learning-rate warmup and decay for Keras 3.

Two wings: the pure core (`keras_autolr.core`: `AutoLRController`,
`MinimumDetector`), which imports without Keras or any ML framework, and the
Keras side (`keras_autolr.keras`: `AutoLR`, `AutoLRSchedule`), with the
optimizers (`AdamP`, `LAMB`) beside them. The Keras names are imported on
first use, and so is `plot` (the figure of a run's LR and loss, which needs
matplotlib: `pip install keras-autolr[plot]`). `docs/architecture.md` shows
how they fit together.
"""

import importlib

from keras_autolr.core import AutoLRController, MinimumDetector

__version__ = "0.2.0"

_LAZY = {
    "AutoLR": "keras_autolr.keras.callback",
    "AutoLRSchedule": "keras_autolr.keras.lr_schedule",
    "AdamP": "keras_autolr.optimizers",
    "LAMB": "keras_autolr.optimizers",
    "plot": "keras_autolr.plotting",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_autolr' has no attribute {name!r}")


__all__ = ["AutoLRController", "MinimumDetector", "__version__", *_LAZY]
