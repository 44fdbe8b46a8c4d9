"""A host copy of the last good weights, for recovery from divergence."""

import keras
import numpy as np


class WeightSnapshot:
    """Keeps a host copy of a model's weights and its optimizer's state.

    The optimizer's step counter and learning-rate variable are left out:
    restoring must not move the schedule back in time.

    Memory: one copy of the model weights plus the optimizer slots (for
    Adam-type optimizers, 3x the model size) in host RAM.

    Args:
        model: a compiled Keras model. Its optimizer may be built later
            (Keras builds it at the first train step): each copy takes the
            variables that exist when it is taken.
    """

    def __init__(self, model):
        self.model = model
        self._variables = None
        self._values = None
        self.step = None

    @property
    def taken(self):
        return self._values is not None

    def take(self, step):
        """Copies the current weights if they are all finite."""
        variables = snapshot_variables(self.model)
        values = read_values(variables)
        if not all_finite(values):
            return False
        self._variables, self._values = variables, values
        self.step = step
        return True

    @property
    def values(self):
        """The copied arrays (weights, then optimizer state), or `None`."""
        return self._values

    def load(self, step, values):
        """Takes a copy read back from disk (`values` as in `values`).

        It is matched to the model's variables when restored: after a
        restart the optimizer may not be built yet.
        """
        self._variables, self._values = None, list(values)
        self.step = step

    def restore(self):
        """Writes the copy back into the model and optimizer.

        Raises:
            ValueError: if a copy read back from disk does not fit the
                model's variables (another model, or another optimizer).
        """
        variables = self._variables or snapshot_variables(self.model)
        shapes = [tuple(v.shape) for v in variables]
        if shapes != [a.shape for a in self._values]:
            raise ValueError(
                f"The weight copy of step {self.step} has {len(self._values)} "
                f"arrays that do not fit the model and optimizer "
                f"({len(variables)} variables): was `backup_dir` written by "
                "another model or optimizer? Give this run its own "
                "`backup_dir`."
            )
        for variable, value in zip(variables, self._values, strict=True):
            variable.assign(value)

    def release(self):
        self._variables = None
        self._values = None


def snapshot_variables(model):
    """The model's weights, then its optimizer's state, without the step
    counter and the learning-rate variable."""
    optimizer = model.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    skip = {id(inner.iterations), id(inner._learning_rate)}
    return list(model.weights) + [
        v for v in optimizer.variables if id(v) not in skip
    ]


def read_values(variables):
    """The values of `variables`, as NumPy arrays, in one device call.

    Reading variables one by one costs one eager op and one device-to-host
    transfer each (about 0.2 ms each for a small model on this CPU). With
    the TensorFlow backend the reads are one `tf.function` instead, 5x
    faster for a 3-layer CNN and its Adam state. The function takes the
    variables as arguments, so it is traced once per process for models of
    the same layout, not once per `fit`. Other backends read variable by
    variable.
    """
    if keras.backend.backend() != "tensorflow":
        return [keras.ops.convert_to_numpy(v) for v in variables]
    # `numpy()` of a CPU tensor may share memory with it: copy.
    return [np.array(t) for t in _read_all([v.value for v in variables])]


_READ_ALL = []


def _read_all(variables):
    """The values of TensorFlow variables, read in one `tf.function`."""
    if not _READ_ALL:
        import tensorflow as tf

        _READ_ALL.append(
            tf.function(
                lambda variables: [tf.identity(v) for v in variables],
                autograph=False,
                reduce_retracing=True,
            )
        )
    return _READ_ALL[0](variables)


def all_finite(arrays):
    return all(np.all(np.isfinite(a)) for a in arrays)
