"""Every private Keras name that keras-autolr touches, in one place.

Keras 3 has no public way to make an optimizer read its learning rate from
a schedule *without* replacing its `learning_rate` variable: the setter
swaps the variable for the schedule, which untracks it, and then a
checkpoint of the optimizer no longer matches its layout
(`keras.callbacks.BackupAndRestore` then skips restoring the optimizer,
its step counter back at 0). So AutoLR keeps the variable and
redirects the one method that reads it, `_get_current_learning_rate`,
which every Keras 3 optimizer calls once per step to get its LR. The
variable itself is `_learning_rate`. The per-step loss record replaces the
model's loss tracker, `_loss_tracker`, which every built-in train step
updates with the step's loss. A `TensorBoard` callback keeps its training
log directory in `_train_dir`. A Keras release that renames any of these
breaks only this module, and the callback tests catch it.

The backends differ in how a callback reaches the state of the train step.
TensorFlow's compiled step reads variables by reference, and the PyTorch
trainer runs eagerly, so a host write to any variable takes effect at the
next step. JAX's `fit` compiles the step as a pure function of the model's
and the optimizer's variables, passes that state from step to step, and
writes it back to the variables only at the end of an epoch (or when a
callback calls `jax_state_sync()`): a callback syncs the state before it
reads or writes a model or optimizer variable (`sync_variables`), and the
schedule's own numbers are constants of the compiled step
(`keras_autolr.keras.lr_schedule`).
"""

import contextlib

import keras
import numpy as np
from keras.src.metrics.reduction_metrics import reduce_to_samplewise_values
from keras.src.utils.tracking import DotNotTrackScope

try:  # Keras's own wording of the base-optimizer arguments.
    from keras.src.optimizers.optimizer import (
        base_optimizer_keyword_args as _KWARGS_DOC,
    )
except ImportError:  # pragma: no cover - the private module moved.
    _KWARGS_DOC = (
        "name, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,\n"
        "            ema_overwrite_frequency, loss_scale_factor,\n"
        "            gradient_accumulation_steps: see\n"
        "            `keras.optimizers.Optimizer`.\n"
    )

# The base-optimizer arguments for an optimizer's docstring, without
# `weight_decay`: each optimizer here documents its own meaning of it.
BASE_KWARGS_DOC = _KWARGS_DOC.replace(
    "        weight_decay: Float. If set, weight decay is applied.\n", ""
)


def inner_optimizer(optimizer):
    """The optimizer that applies the updates: the one inside a
    `LossScaleOptimizer` (mixed precision), else `optimizer` itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def to_numpy(variable):
    """The value of a Keras variable as a NumPy array (JAX: call
    `sync_variables` first during `fit`). NumPy's own conversion of a JAX or
    TensorFlow Keras variable is deprecated: convert its value."""
    if keras.backend.backend() == "tensorflow":
        return variable.numpy()
    return keras.ops.convert_to_numpy(variable.value)


def steps_done(optimizer):
    """The step counter of the updating optimizer, as an int."""
    iterations = inner_optimizer(optimizer).iterations
    if isinstance(iterations, keras.Variable):
        return int(to_numpy(iterations))
    # With gradient accumulation, a tensor computed from the counter.
    return int(keras.ops.convert_to_numpy(iterations))


def learning_rate_variable(optimizer):
    """What holds the LR of the updating optimizer: a variable, or the
    schedule or callable it was built with."""
    return inner_optimizer(optimizer)._learning_rate


def check_plain_learning_rate(optimizer):
    """Raises `ValueError` unless the optimizer's LR is a plain variable,
    which `read_learning_rate_from` can take over."""
    value = learning_rate_variable(optimizer)
    if isinstance(
        value, keras.optimizers.schedules.LearningRateSchedule
    ) or not isinstance(value, keras.Variable):
        raise ValueError(
            "AutoLR sets the learning rate itself, but the optimizer was "
            f"built with learning_rate={value!r}. Compile with a plain float "
            "learning rate instead (its value is not used), e.g. `AdamP()` "
            "or `keras.optimizers.Lamb()`."
        )


def read_learning_rate_from(optimizer, schedule):
    """Makes the updating optimizer use `schedule(iterations)` as its LR at
    every step, in the compiled train step too. Its LR variable stays in
    place (and tracked), so checkpoints keep their layout."""
    inner = inner_optimizer(optimizer)
    inner._get_current_learning_rate = lambda: schedule(inner.iterations)


def stop_reading_learning_rate_from(optimizer):
    """Undoes `read_learning_rate_from`: the LR variable is read again."""
    inner = inner_optimizer(optimizer)
    if "_get_current_learning_rate" in vars(inner):
        del inner._get_current_learning_rate


def step_bakes_in_constants():
    """Whether `fit`'s compiled step takes variables other than the model's
    and optimizer's as constants, so that the schedule must be recompiled
    to change (JAX)."""
    return keras.backend.backend() == "jax"


def variable_scope(model):
    """Where variables that every replica reads are made: the model's
    `tf.distribute` strategy scope on TensorFlow; `keras.distribution`
    places them by itself on JAX."""
    strategy = getattr(model, "distribute_strategy", None)
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def sync_variables(model):
    """JAX: writes the state that `fit` carries between steps back to the
    variables, and makes the next step read the variables again. A no-op on
    the other backends, whose variables are the state."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def samplewise_values(values, sample_weight, dtype):
    """`values` and `sample_weight` reduced as `keras.metrics.Mean` reduces
    them before it sums them."""
    return reduce_to_samplewise_values(
        values, sample_weight, reduce_fn=keras.ops.mean, dtype=dtype
    )


def loss_tracker(model):
    """The `keras.metrics.Mean` that the train step updates with the loss."""
    return model._loss_tracker


def set_loss_tracker(model, tracker):
    """Makes the train step update `tracker` with the loss (after the
    train function is rebuilt). It is not tracked as one more metric of
    the model, as `compile` does not track its own."""
    with DotNotTrackScope():
        model._loss_tracker = tracker


def uses_builtin_train_step(model):
    """Whether `model.train_step` is Keras's own for the backend (which
    updates the loss tracker), not one a subclass defines."""
    for cls in type(model).__mro__:
        if "train_step" in vars(cls):
            return cls.__module__.startswith("keras.src.backend.")
    return False


def metric_values(model, variables):
    """The values of metric variables of `model` as NumPy arrays, also
    during `fit` on JAX, where the step carries them as its state: read
    from that state, which leaves it in place (no sync)."""
    state = getattr(model, "_jax_state", None)
    if state and not getattr(model, "_jax_state_synced", True):
        current = state.get("metrics_variables")
        if current:
            index = {id(v): i for i, v in enumerate(model.metrics_variables)}
            return [np.asarray(current[index[id(v)]]) for v in variables]
    return read_values(variables)


def read_values(variables):
    """The values of `variables`, as NumPy arrays.

    With the TensorFlow backend each plain variable is read by one
    `ReadVariableOp` on its handle, which skips the Python layers of a
    variable's own read, with nothing to trace (a `tf.function` would be
    traced at the first copy). The
    variables of a `tf.distribute` strategy are read as other backends'
    are, one by one through `numpy()`, which sums the replicas of an
    on-read variable (a handle would read one replica).
    """
    values = [v.value for v in variables]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not any(
            isinstance(t, tf.distribute.DistributedValues) for t in values
        ):
            read = tf.raw_ops.ReadVariableOp
            # `numpy()` of a CPU tensor may share memory with it: copy.
            return [
                np.array(read(resource=t.handle, dtype=t.dtype)) for t in values
            ]
    return [np.array(to_numpy(v)) for v in variables]


def print_msg(message):
    """Prints as Keras's own callbacks do (stdout, or absl logging where
    Keras logs that way)."""
    from keras.src.utils import io_utils

    io_utils.print_msg(message)


def fit_callbacks(callback):
    """The callbacks of the `fit` that is calling `callback` now (from one
    of its hooks), or `[]` where they cannot be found: Keras gives a
    callback no reference to its `CallbackList`, which calls the hook."""
    import sys

    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            if any(c is callback for c in owner.callbacks):
                return list(owner.callbacks)
        frame = frame.f_back
    return []


def train_log_dir(tensorboard):
    """The directory of a `keras.callbacks.TensorBoard`'s training logs."""
    return tensorboard._train_dir


def ends_data(error):
    """Whether `error`, raised by a train function, is how a dataset of
    unknown size ends an epoch rather than a failure."""
    return isinstance(error, StopIteration) or (
        type(error).__name__ == "OutOfRangeError"
    )
