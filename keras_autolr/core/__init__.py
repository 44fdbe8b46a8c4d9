"""The pure core of keras-autolr: NumPy and SciPy only, no ML framework.

Modules in the order a step's loss passes through them: `controller` (the
state machine a caller feeds, and its `views`), `losses` (the record and
its statistics), `warmup` (the tests of warmup and what they decide), `gp`
and `smoothers` (the Gaussian-process test), `decay` (its guards),
`schedule` (the LR of every step), `events` (what the controller
reports), `checkpoint`, `options`, `messages` and `checks`.
`docs/architecture.md` draws the path.
"""

from keras_autolr.core.controller import AutoLRController
from keras_autolr.core.gp import MinimumDetector

__all__ = ["AutoLRController", "MinimumDetector"]
