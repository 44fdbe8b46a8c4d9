"""The in-graph form of the AutoLR schedule, evaluated every optimizer step.

The ramp and the decay are computed on the device from the optimizer's step
counter and four numbers: the switch step, where the current decay starts,
its peak LR, and the step offset. The host changes them only when the
controller changes a decision, so the LR follows the schedule step by step
inside a `steps_per_execution` chunk, under `tf.distribute` strategies,
`keras.distribution` and XLA, with no host op in the train step.

TensorFlow's compiled step and PyTorch's eager step read them from variables
that the host writes. JAX's `fit` compiles the step as a pure function of
the model's and the optimizer's state: any other variable is a constant of
the compiled function, and a host write to it would be silently ignored.
There the four numbers are constants of the step on purpose, and a change
recompiles it (`AutoLR` does this): a few times per run, at the switch and
at each rescue, which leaves the optimizer's variables, and so every
checkpoint, as they are.
"""

import warnings

import keras
from keras import ops

from keras_autolr.core import messages, schedule
from keras_autolr.keras import compat

_NAMES = ("switch_step", "decay_start", "peak_lr", "step_offset")


class AutoLRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """AutoLR's schedule as a Keras `LearningRateSchedule`.

    Create it inside the distribution strategy's scope so that its variables
    are mirrored on every replica. `AutoLR` does all of this for you; use
    this class directly only in a custom training loop that evaluates the LR
    in-graph.

    Args:
        controller: the `AutoLRController` whose schedule this evaluates:
            its `shape`, and the decisions of its reports (`sync()`).
        constants: evaluate the decisions as constants, which a compiled
            step bakes in (recompile it after `sync()` or `align()` return
            `True`), instead of variables. Defaults to `False`; `AutoLR`
            sets it on JAX.

    Example:

    >>> from keras_autolr import AutoLRController
    >>> ctl = AutoLRController(total_steps=1000)
    >>> schedule = AutoLRSchedule(ctl)
    >>> round(float(schedule(0)), 9)  # ctl.lr_at(0), in float32
    0.0001
    """

    def __init__(self, controller, constants=False):
        self.controller = controller
        self.shape = controller.shape
        self.constants = constants
        # The values last written, as Python floats.
        self._values = dict.fromkeys(_NAMES, 0.0)
        self._variables = {}
        if not constants:
            self._variables = {
                name: keras.Variable(
                    0.0, dtype="float32", trainable=False, name=f"autolr_{name}"
                )
                for name in _NAMES
            }
        self._synced_revision = None
        self.sync(controller.report(), force=True)

    def sync(self, report=None, force=False, horizon=None):
        """Copies the decisions of a controller's `Report` into the
        schedule if changed.

        Args:
            report: the controller's latest `Report`. Defaults to `None`:
                `controller.report()`.
            force: write every value, changed or not.
            horizon: the number of steps the device may run before the
                next `sync` (one chunk of `steps_per_execution`). While
                warmup lasts beyond them, none of those steps uses the
                peak LR, and its write waits: during warmup every test
                moves the provisional peak, and a device write (or a
                recompilation) costs far more than the check. `None`
                writes it now.

        Returns:
            Whether a value changed.
        """
        if report is None:
            report = self.controller.report()
        if report.revision == self._synced_revision and not force:
            return False
        values = {
            "switch_step": float(report.switch_step),
            # The current decay: the first one, or the restart after a
            # rescue.
            "decay_start": float(report.decay_start),
            "peak_lr": float(report.decay_lr),
        }
        deferred = (
            not force
            and horizon is not None
            and report.steps + horizon < report.switch_step
        )
        if deferred:
            del values["peak_lr"]
        # Most revisions move one value (the provisional peak, at each
        # test): write only what changed, one device write each.
        changed = [self._write(n, v, force) for n, v in values.items()]
        if not deferred:
            self._synced_revision = report.revision
        return any(changed)

    def align(self, iterations, steps=None, force=False):
        """Makes optimizer step `iterations` the controller's next step,
        `steps` (defaults to `None`: `controller.steps`).

        Returns:
            Whether the offset changed.
        """
        if steps is None:
            steps = self.controller.steps
        offset = float(iterations) - steps
        return self._write("step_offset", offset, force)

    def _write(self, name, value, force):
        """Writes `value` if it changed, or with `force`; returns whether
        it changed."""
        changed = value != self._values[name]
        if changed or force:
            self._values[name] = value
            if self._variables:
                self._variables[name].assign(value)
        return changed

    def _read(self, name):
        """What the compiled step reads: the variable, or the constant."""
        return self._variables[name] if self._variables else self._values[name]

    @property
    def switch_step(self):
        return self._read("switch_step")

    @property
    def decay_start(self):
        return self._read("decay_start")

    @property
    def peak_lr(self):
        return self._read("peak_lr")

    @property
    def step_offset(self):
        return self._read("step_offset")

    def __call__(self, step):
        step = ops.cast(step, "float32") - self.step_offset
        return self.shape.lr(
            step,
            switch_step=self.switch_step,
            peak_lr=self.peak_lr,
            decay_start=self.decay_start,
            xp=ops,
        )


class InstalledSchedule:
    """An `AutoLRSchedule` installed in a model's optimizer, which the
    train step then evaluates in place of the optimizer's own LR.

    Creating it installs the schedule (inside the model's distribution
    scope) and recompiles the train step; `update(report)` copies the
    decisions of the controller's latest `Report` to it; `remove()` gives
    the optimizer back its own LR, the value it was compiled with, so that
    a later `fit` without AutoLR trains at it.

    Args:
        model: a compiled Keras model.
        controller: the `AutoLRController` whose schedule is installed.
        on_failure: called when the train step raises (an interrupted or
            failed `fit`, whose `on_train_end` never comes).
    """

    def __init__(self, model, controller, on_failure=None):
        optimizer = model.optimizer
        compat.check_plain_learning_rate(optimizer)
        variable = compat.learning_rate_variable(optimizer)
        self.compiled_lr = float(compat.to_numpy(variable))
        self._on_failure = on_failure
        self._lr_written = False
        with compat.variable_scope(model):
            self.schedule = AutoLRSchedule(
                controller,
                constants=compat.step_bakes_in_constants(),
            )
        self.model = model
        self._optimizer = compat.inner_optimizer(optimizer)
        self._loss_scaled = self._optimizer is not optimizer
        report = controller.report()
        self.schedule.sync(report, force=True)
        self.schedule.align(
            compat.steps_done(self._optimizer), report.steps, force=True
        )
        compat.read_learning_rate_from(optimizer, self.schedule)
        self._compile()

    def _compile(self):
        """Rebuilds the train function, and calls `on_failure` if it
        raises (not at the end of a dataset of unknown size)."""
        self.model.make_train_function(force=True)
        step = self.model.train_function
        on_failure = self._on_failure
        if on_failure is None:
            return

        def guarded(*args, **kwargs):
            try:
                return step(*args, **kwargs)
            except BaseException as error:
                if not compat.ends_data(error):
                    on_failure()
                raise

        self.model.train_function = guarded

    def update(self, report, force=False, horizon=None):
        """Copies the decisions of `report` to the schedule (see
        `AutoLRSchedule.sync`), and recompiles the train step where the
        schedule's values are its constants and one changed."""
        changed = self.schedule.sync(report, force=force, horizon=horizon)
        if force or self._loss_scaled:
            # A step that the loss-scale optimizer skipped (non-finite
            # gradients) did not advance `iterations`: keep the schedule on
            # the count of batches run, which is the budget's clock.
            compat.sync_variables(self.model)
            iterations = compat.steps_done(self._optimizer)
            changed |= self.schedule.align(
                iterations, report.steps, force=force
            )
        if changed and self.schedule.constants:
            # JAX: recompile. Mid-epoch `fit` has emptied the variables (it
            # carries the state), and under `keras.distribution` the
            # compilation reads their shardings: put the state back first.
            compat.sync_variables(self.model)
            self._compile()

    def warn_if_lr_written(self, epoch):
        """Warns, once, if something wrote the optimizer's LR variable
        during `fit` (by epoch `epoch`): the schedule sets the LR of every
        step, so that value is not used."""
        if self._lr_written:
            return
        compat.sync_variables(self.model)
        variable = compat.learning_rate_variable(self._optimizer)
        value = float(compat.to_numpy(variable))
        if value != self.compiled_lr:
            self._lr_written = True
            text = messages.lr_written(value, epoch)
            warnings.warn(text, RuntimeWarning, stacklevel=3)

    def remove(self):
        """Gives the optimizer back its own LR, as compiled."""
        compat.stop_reading_learning_rate_from(self._optimizer)
        variable = compat.learning_rate_variable(self._optimizer)
        variable.assign(self.compiled_lr)
        self.model.train_function = None


@keras.saving.register_keras_serializable(package="keras_autolr")
class FoundSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The schedule an AutoLR run found, for a run without AutoLR
    (`AutoLR.found_schedule()`): the warmup ramp, held at `landing_lr`
    (where the run's ramp overshot it), until the switch; then the decay
    from `landing_lr` to 0 at `total_steps`. The ramp's end and the switch
    are fractions of the budget, so the schedule stretches to any
    `total_steps`.

    Args:
        total_steps: the budget; the LR is 0 from this step on.
        landing_lr: the LR the decay starts from.
        switch_fraction: the switch step, as a fraction of `total_steps`.
        min_lr: LR of the first step.
        max_lr: LR the ramp would reach at `ramp_fraction * total_steps`.
        ramp_fraction: where the ramp would reach `max_lr`.
        warmup: `"exponential"` or `"linear"`.
        decay: `"linear"`, `"cosine"` or `"constant_cosine"`.
        cooldown_fraction: the cosine of `"constant_cosine"`, as a fraction
            of `total_steps`.
    """

    def __init__(
        self,
        total_steps,
        landing_lr,
        switch_fraction,
        min_lr,
        max_lr,
        ramp_fraction,
        warmup="exponential",
        decay="linear",
        cooldown_fraction=0.2,
    ):
        self.total_steps = int(total_steps)
        self.landing_lr = float(landing_lr)
        self.switch_fraction = float(switch_fraction)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.ramp_fraction = float(ramp_fraction)
        self.warmup = warmup
        self.decay = decay
        self.cooldown_fraction = float(cooldown_fraction)
        total = float(self.total_steps)
        self._shape = schedule.Shape(
            warmup=warmup,
            decay=decay,
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            ramp_steps=self.ramp_fraction * total,
            total_steps=total,
            cooldown_steps=self.cooldown_fraction * total,
        )
        self._switch = self.switch_fraction * total

    @classmethod
    def of(cls, controller, total_steps=None):
        """The schedule `controller` found, over `total_steps` (its own
        budget if `None`).

        Raises:
            ValueError: warmup has not ended.
        """
        event = controller.switch_event
        if event is None:
            raise ValueError(
                "AutoLR has found no schedule yet: warmup has not ended "
                f"(step {controller.steps} of {controller.total_steps})."
            )
        settings, total = controller.settings, controller.total_steps
        return cls(
            total_steps=total if total_steps is None else total_steps,
            landing_lr=event["peak_lr"],
            switch_fraction=event["step"] / total,
            min_lr=settings.min_lr,
            max_lr=settings.max_lr,
            ramp_fraction=controller.ramp_steps / total,
            warmup=settings.warmup,
            decay=settings.decay,
            cooldown_fraction=settings.cooldown_fraction,
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        shape = self._shape
        warm = ops.minimum(shape.warmup_lr(step, xp=ops), self.landing_lr)
        cool = shape.decay_lr(step, self.landing_lr, self._switch, xp=ops)
        return ops.where(step < self._switch, warm, cool)

    def get_config(self):
        return {
            "total_steps": self.total_steps,
            "landing_lr": self.landing_lr,
            "switch_fraction": self.switch_fraction,
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "ramp_fraction": self.ramp_fraction,
            "warmup": self.warmup,
            "decay": self.decay,
            "cooldown_fraction": self.cooldown_fraction,
        }


def summary(controller, restored=()):
    """What a run found, as a dict: `switch_step` and `reason` (how warmup
    ended, `None` before it has), `lr_at_minimum` (the LR at the smoothed
    loss minimum), `landing_lr` (the LR the decay started from),
    `highest_lr` (the highest LR run), `rescues` (the decay restarts, each
    an event dict), `restored` (`[step, step the copy was taken at]` for
    each weight copy put back, from `restored`) and `steps` (run so far)."""
    ctl = controller
    event = ctl.switch_event or {}
    # The ramp rises: its last step run is the highest LR.
    last = float(ctl.lr_at(ctl.steps - 1)) if ctl.steps else None
    return {
        "switch_step": event.get("step"),
        "reason": event.get("reason"),
        "lr_at_minimum": event.get("minimum_lr", ctl.lr_at_minimum),
        "landing_lr": event.get("peak_lr"),
        "highest_lr": event.get("lr_before", last),
        "rescues": ctl.rescues,
        "restored": [list(r) for r in restored],
        "steps": ctl.steps,
    }
