"""The in-graph form of the AutoLR schedule, evaluated every optimizer step.

The ramp and the decay are computed on the device from the optimizer's step
counter and a few variables (the switch step, where the current decay starts,
its peak LR, the step offset). The host writes those variables
only when the controller changes a decision, so the LR follows the schedule
step by step inside a `steps_per_execution` chunk, under `tf.distribute`
strategies and XLA, with no host op in the train step.
"""

import keras
from keras import ops


class AutoLRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """AutoLR's schedule as a Keras `LearningRateSchedule` of variables.

    Create it inside the distribution strategy's scope so that its variables
    are mirrored on every replica. `AutoLR` does all of this for you; use
    this class directly only in a custom training loop that evaluates the LR
    in-graph.

    Args:
        controller: the `AutoLRController` whose schedule this evaluates;
            its constants are copied and its decisions read by `sync()`.

    Example:

    >>> from keras_autolr import AutoLRController
    >>> ctl = AutoLRController(total_steps=1000)
    >>> schedule = AutoLRSchedule(ctl)
    >>> round(float(schedule(0)), 9)  # ctl.lr_at(0), in float32
    0.0001
    """

    def __init__(self, controller):
        self.controller = controller
        self.switch_step = keras.Variable(
            0.0, dtype="float32", trainable=False, name="autolr_switch_step"
        )
        self.decay_start = keras.Variable(
            0.0, dtype="float32", trainable=False, name="autolr_decay_start"
        )
        self.peak_lr = keras.Variable(
            0.0, dtype="float32", trainable=False, name="autolr_peak_lr"
        )
        self.step_offset = keras.Variable(
            0.0, dtype="float32", trainable=False, name="autolr_step_offset"
        )
        self._synced_revision = None
        self._written = {}  # Host copies of the values last written.
        self._offset = 0.0
        self.sync()

    def sync(self, force=False, horizon=None):
        """Copies the controller's decisions into the variables if changed.

        Args:
            force: write every variable, changed or not.
            horizon: the number of steps the device may run before the
                next `sync` (one chunk of `steps_per_execution`). While
                warmup lasts beyond them, none of those steps uses the
                peak LR, and its write waits: during warmup every test
                moves the provisional peak, and a device write costs far
                more than the check. `None` writes it now.

        Returns:
            Whether the variables were written.
        """
        ctl = self.controller
        if ctl.plan.revision == self._synced_revision and not force:
            return False
        plan = ctl.plan
        values = {
            "switch_step": float(plan.switch_step),
            # The current decay: the first one, or the restart after a
            # rescue.
            "decay_start": float(plan.decay_start),
            "peak_lr": float(plan.decay_peak_lr),
        }
        deferred = (
            not force
            and horizon is not None
            and ctl.steps + horizon < ctl.switch_step
        )
        if deferred:
            del values["peak_lr"]
        # Most revisions move one value (the provisional peak, at each
        # test): write only what changed, one device write each.
        written = False
        for name, value in values.items():
            if force or self._written.get(name) != value:
                getattr(self, name).assign(value)
                self._written[name] = value
                written = True
        if not deferred:
            self._synced_revision = ctl.plan.revision
        return written

    def align(self, iterations, force=False):
        """Makes optimizer step `iterations` the controller's next step.

        Returns:
            Whether the offset was written to the device: if it changed, or
            with `force`.
        """
        offset = float(iterations) - self.controller.steps
        if offset == self._offset and not force:
            return False
        self.step_offset.assign(offset)
        self._offset = offset
        return True

    def __call__(self, step):
        step = ops.cast(step, "float32") - self.step_offset
        return self.controller.shape.lr(
            step,
            switch_step=self.switch_step,
            peak_lr=self.peak_lr,
            decay_start=self.decay_start,
            xp=ops,
        )
