"""A host copy of the last good weights, for recovery from divergence."""

import numpy as np


class WeightSnapshot:
    """Keeps a host copy of a model's weights and its optimizer's state.

    The optimizer's step counter and learning-rate variable are left out:
    restoring must not move the schedule back in time.

    Memory: one copy of the model weights plus the optimizer slots (for
    Adam-type optimizers, 3x the model size) in host RAM.

    Args:
        model: a built, compiled Keras model.
    """

    def __init__(self, model):
        self.model = model
        self._weights = None
        self._slots = None
        self.step = None

    def _slot_variables(self):
        optimizer = self.model.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        skip = {id(inner.iterations), id(inner._learning_rate)}
        return [v for v in optimizer.variables if id(v) not in skip]

    @property
    def taken(self):
        return self._weights is not None

    def take(self, step):
        """Copies the current weights if they are all finite."""
        weights = self.model.get_weights()
        if not all_finite(weights):
            return False
        self._weights = weights
        self._slots = [v.numpy() for v in self._slot_variables()]
        self.step = step
        return True

    def restore(self):
        """Writes the copy back into the model and optimizer."""
        self.model.set_weights(self._weights)
        for variable, value in zip(
            self._slot_variables(), self._slots, strict=True
        ):
            variable.assign(value)

    def release(self):
        self._weights = None
        self._slots = None


def all_finite(arrays):
    return all(np.all(np.isfinite(a)) for a in arrays)
