"""Where AutoLR gets the training loss of each step during `fit`.

Every built-in train step (TensorFlow, JAX, PyTorch) updates the model's
loss tracker, a `keras.metrics.Mean`, with the step's loss: `StepLosses`
puts a `StepLossTracker` in its place, a `Mean` that also writes each
step's loss into a ring of slots, on the device, as state of the compiled
step. The host reads the ring only where a decision needs the losses (a
test point, the end of warmup, the end of an epoch), all the steps since
the last read at once, and runs ahead of the device in between. Under
`tf.distribute` strategies each replica writes its own slots and a read
sums them; under `keras.distribution` the loss is already the global one.

A train step of the model's own, or a `monitor` other than the loss, is
read from the logs: Keras logs only the running mean of the epoch, once per
chunk of `steps_per_execution` steps, and `LoggedLosses` recovers each
chunk's mean from it, after every chunk.

Both answer the callback through the same calls: `start_epoch()`,
`read(steps, logs, report)` after each chunk (the losses of the steps run
since the last read, or `None` where no decision needs them yet),
`horizon(report)`, and `remove()` after `fit`. They never see the
controller: the callback passes the losses on, and what they need of the
schedule comes in the controller's last `Report`.
"""

import math
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_autolr.keras import compat


class Losses(NamedTuple):
    """The losses of the next `num_steps` steps: one per step (an array),
    their mean (a float), or unknown (`None`)."""

    values: object
    num_steps: int


class StepLossTracker(keras.metrics.Mean):
    """A `keras.metrics.Mean` that also keeps each update in a ring.

    The update of step `k` (counted from the last `reset_state()`, which
    `fit` calls at the start of every epoch) writes its weighted loss sum
    and its weight into row `k % capacity` of `steps`.

    Args:
        capacity: slots in the ring: at least the steps between two reads.
        name: the metric's name; the loss tracker's is `"loss"`.
        dtype: the dtype of the sums; defaults to `floatx`.
    """

    def __init__(self, capacity, name="loss", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.capacity = int(capacity)
        # Slot `i`: the weighted loss sum and the weight of one update, read
        # back in one transfer.
        self.steps = self.add_variable(
            shape=(self.capacity, 2),
            initializer="zeros",
            dtype=self.dtype,
            name="steps",
        )
        self.step_index = self.add_variable(
            shape=(), initializer="zeros", dtype="int32", name="step_index"
        )

    def update_state(self, values, sample_weight=None):
        values, sample_weight = compat.samplewise_values(
            values, sample_weight, self.dtype
        )
        total = ops.sum(values)
        if sample_weight is not None:
            count = ops.sum(sample_weight)
        elif len(values.shape) >= 1:
            count = ops.shape(values)[0]
        else:
            count = 1
        count = ops.cast(count, self.dtype)
        self.total.assign_add(total)
        self.count.assign_add(count)
        # `where`, not a one-hot product: a NaN loss must stay in its slot.
        slot = ops.equal(
            ops.arange(self.capacity, dtype="int32")[:, None],
            self.step_index.value % self.capacity,
        )
        update = ops.stack([total, count])[None, :]
        self.steps.assign(ops.where(slot, update, self.steps.value))
        self.step_index.assign_add(1)

    def reset_state(self):
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self):
        return {**super().get_config(), "capacity": self.capacity}


class StepLosses:
    """Records the loss of every step of a model's `fit`, and reads it
    where a decision needs it.

    Creating it replaces the model's loss tracker by a `StepLossTracker`
    (the train function must then be rebuilt, as `AutoLR` does when it
    installs its schedule); `remove()` puts the model's own back.

    The losses are read after the first chunk that reaches a multiple of
    `every` steps (the controller's test points), the end of warmup, or
    the end of an epoch; between reads the host does not wait for the
    device.

    Args:
        model: a compiled Keras model whose train step is Keras's own.
        every: read at least at every multiple of this many steps.
        chunk: the model's `steps_per_execution`.
        epoch_steps: steps in one epoch.
    """

    def __init__(self, model, every, chunk, epoch_steps):
        self.model = model
        self.every = every
        self.chunk = chunk
        self.epoch_steps = epoch_steps
        self._own = compat.loss_tracker(model)
        # The most steps between two reads: a read point can fall inside
        # a chunk, and every epoch ends with a read.
        capacity = min(every + chunk - 1, epoch_steps)
        with compat.variable_scope(model):
            self.tracker = StepLossTracker(capacity)
        compat.set_loss_tracker(model, self.tracker)
        self.start_epoch()

    def start_epoch(self):
        """`fit` resets the tracker at the start of every epoch."""
        self._steps = 0

    def read(self, steps, logs, report, flush=False):
        """The `Losses` of each step run since the last read, up to `steps`
        steps into the epoch, if a decision needs them now (after the
        controller's last `report`) or with `flush`; else `None`."""
        due = steps >= min(self.epoch_steps, self._read_point(report))
        if steps <= self._steps or not (due or flush):
            return None
        losses = self.read_steps(self._steps, steps)
        self._steps = steps
        return Losses(losses, losses.size)

    def horizon(self, report):
        """The most steps the device may run before the next read."""
        end = -(-self._read_point(report) // self.chunk) * self.chunk
        return min(end, self.epoch_steps) - self._steps

    def _read_point(self, report):
        """The next step, counted in the epoch, after which a decision
        needs the losses: the next test point, or the end of warmup."""
        fed = report.steps
        point = (fed // self.every + 1) * self.every
        if fed < report.switch_step:
            point = min(point, report.switch_step)
        return point - (fed - self._steps)

    def read_steps(self, start, end):
        """The losses of steps `start` to `end - 1` of the current epoch.

        Raises:
            RuntimeError: if one of these steps did not update the loss
                tracker (a train step that does not record its loss there).
        """
        tracker = self.tracker
        if end - start > tracker.capacity:
            raise ValueError(
                f"Steps {start} to {end - 1} do not fit in the "
                f"{tracker.capacity} slots of the per-step loss record."
            )
        (steps,) = compat.metric_values(self.model, [tracker.steps])
        slots = np.arange(start, end) % tracker.capacity
        sums, counts = steps[slots].astype(np.float64).T
        if not np.all(counts > 0):
            raise RuntimeError(
                "AutoLR reads the loss of every step from the model's loss "
                "tracker, which the train step did not update. If the "
                "model's train step is your own, have it update "
                "`self._loss_tracker` (as Keras's does), or pass AutoLR "
                "`monitor=` the name of the loss in its logs."
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts

    def remove(self):
        """Gives the model its own loss tracker back."""
        compat.set_loss_tracker(self.model, self._own)


class LoggedLosses:
    """The mean loss of each chunk, from the running mean of the epoch that
    Keras logs under `monitor` (one step per chunk: every step's loss).

    The running mean weighs batches by their size, which the logs do not
    give: the chunk that holds a short last batch of an epoch gets an
    approximate loss (it assumes full batches).

    Args:
        monitor: the log entry holding the training loss.
        chunk: the model's `steps_per_execution`.
    """

    def __init__(self, monitor, chunk):
        self.monitor = monitor
        self.chunk = chunk
        self.start_epoch()

    def start_epoch(self):
        self._steps = 0
        self._total = 0.0

    def read(self, steps, logs, report, flush=False):
        """The `Losses` of the steps run since the last call, up to `steps`
        steps into the epoch, as their mean; `None` if no step ran since
        (every call reads: `report` and `flush` change nothing).

        Raises:
            ValueError: if the logs have no entry `monitor`.
        """
        if steps <= self._steps:
            return None
        if self.monitor not in logs:
            raise ValueError(
                f"AutoLR needs the training loss in the logs under "
                f"`{self.monitor}`, but the logs have keys {sorted(logs)}. "
                "Pass `monitor=` the name of the loss entry."
            )
        total = float(logs[self.monitor]) * steps
        chunk = steps - self._steps
        if math.isfinite(self._total):
            losses = Losses((total - self._total) / chunk, chunk)
        else:
            # A non-finite loss earlier in the epoch poisoned the running
            # mean until the epoch ends: these steps' losses are unknown.
            losses = Losses(None, chunk)
        self._steps, self._total = steps, total
        return losses

    def horizon(self, report):
        """The logs are read after every chunk."""
        return self.chunk

    def remove(self):
        """Nothing to undo."""
