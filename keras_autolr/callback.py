"""`AutoLR`: the Keras adapter of the AutoLR controller.

Data path: Keras step -> `on_train_batch_end` (true per-chunk mean loss) ->
`AutoLRController.update` -> detector -> controller -> `AutoLRSchedule`
variables, written only when a decision changes. The optimizer evaluates the
schedule in-graph every step.
"""

import math
import warnings

import keras

from keras_autolr.state_store import WEIGHT_STEPS, StateStore
from keras_autolr.controller import DECAY, AutoLRController
from keras_autolr.keras_schedule import AutoLRSchedule
from keras_autolr.weights import WeightSnapshot, all_finite

# At most this many tests between two weight copies while the loss falls.
_SNAPSHOT_CHECKS = 4
# Warn when no test can run before this fraction of the warmup ramp.
_LATE_TEST = 0.25

_CONTROLLER_OPTIONS = (
    "min_lr",
    "max_lr",
    "max_warmup_fraction",
    "warmup",
    "fast_start",
    "decay",
    "cooldown_fraction",
    "patience",
    "num_tests",
    "confidence",
    "peak_fraction",
    "bin_steps",
    "min_bins",
    "max_bins",
    "seed",
)


@keras.saving.register_keras_serializable(package="keras_autolr")
class AutoLR(keras.callbacks.Callback):
    """Automatic warmup and decay of the learning rate (AutoWU).

    The LR starts at `min_lr` and grows every step until a Gaussian process
    fitted to the training loss says the loss has passed its minimum; it
    then rolls back to the LR at the minimum and decays to 0 at the end of
    the `epochs` budget. There is no peak LR and no warmup length to tune.

    The schedule is evaluated in the compiled train step, every optimizer
    step, so it is exact with `steps_per_execution > 1`, under
    `tf.distribute` strategies and with XLA; the callback only feeds losses
    to the controller and writes two variables when a decision is made.

    Args:
        epochs: the training budget in epochs. Defaults to `None`: the
            `epochs` of `fit`.
        steps_per_epoch: steps in one epoch. Defaults to `None`: the number
            of steps `fit` reports (the `steps_per_epoch` of `fit`, or the
            size of a dataset of known cardinality).
        verbose: `0` silent, `1` one line when warmup ends. Defaults to `1`.
        monitor: the log entry holding the training loss. Defaults to
            `"loss"`.
        check_every: steps between two tests of the loss minimum, or
            `"epoch"` for once per epoch as the AutoWU reference. Defaults to
            `None`: about 100 tests over the warmup cap.
        backup_dir: a directory where AutoLR writes its state at the end of
            every epoch (atomically; the last 3 are kept). A run restarted
            with the same command, whose model resumes at epoch `k` (through
            `keras.callbacks.BackupAndRestore`, or a checkpoint and
            `fit(initial_epoch=k)`), continues from the state after epoch
            `k` with the same decisions. With `restore_weights`, the weight
            copies that a rollback would restore are written there too
            (up to two copies of the model and optimizer state), so that
            the restarted run rolls back to the same weights. A `fit` from
            epoch 0 is a new run: it deletes the AutoLR files of an earlier
            one there. Defaults to `None`: state kept in memory only.
        restore_weights: keep a host copy of the weights and optimizer
            state from when the loss was at its lowest, and put it back
            when warmup ends (the overshoot past the minimum can damage a
            network, and rolling back the LR alone does not undo that) and
            when the loss blows up during decay (the decay then restarts at
            half the LR). Costs one copy of the model and optimizer state
            in host memory (two while a new copy awaits confirmation by the
            following losses), and a device-to-host copy at most every few
            tests during warmup and at the end of each epoch at a new
            lowest loss. Defaults to `True`.
        **kwargs: options of `AutoLRController`: `min_lr`, `max_lr`,
            `max_warmup_fraction`, `warmup`, `fast_start`, `decay`,
            `cooldown_fraction`, `patience`, `num_tests`, `confidence`,
            `peak_fraction`, `bin_steps`, `min_bins`, `max_bins`, `seed`.
            `bin_steps` defaults to the model's `steps_per_execution`; give
            both runs the same `bin_steps` to get identical decisions at
            different `steps_per_execution`.

    Logs: adds `learning_rate` (the LR of the last step run) and
    `autolr_phase` (0 during warmup, 1 during decay) to the batch and epoch
    logs of the callbacks that come after it in the list.

    Example:

    ```python
    model.compile(optimizer=AdamP(weight_decay=1e-4), loss="mse")
    model.fit(x, y, batch_size=4096, epochs=30, callbacks=[AutoLR()])
    ```
    """

    def __init__(
        self,
        epochs=None,
        steps_per_epoch=None,
        verbose=1,
        monitor="loss",
        check_every=None,
        backup_dir=None,
        restore_weights=True,
        **kwargs,
    ):
        super().__init__()
        unknown = sorted(set(kwargs) - set(_CONTROLLER_OPTIONS))
        if unknown:
            raise TypeError(
                f"Unrecognized keyword arguments passed to AutoLR: {unknown}. "
                f"Valid options: {list(_CONTROLLER_OPTIONS)}"
            )
        _check_optional_int("epochs", epochs)
        _check_optional_int("steps_per_epoch", steps_per_epoch)
        if verbose not in (0, 1, True, False):
            raise ValueError(
                "Argument `verbose` must be 0 or 1. "
                f"Received: verbose={verbose!r}"
            )
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                "Argument `monitor` must be a non-empty string. "
                f"Received: monitor={monitor!r}"
            )
        if check_every != "epoch":
            _check_optional_int("check_every", check_every)
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.verbose = int(verbose)
        self.monitor = monitor
        if not isinstance(restore_weights, bool):
            raise ValueError(
                "Argument `restore_weights` must be True or False. "
                f"Received: restore_weights={restore_weights!r}"
            )
        self.check_every = check_every
        self.backup_dir = None if backup_dir is None else str(backup_dir)
        self.restore_weights = restore_weights
        self.controller_options = dict(kwargs)
        # Fails now, not at the first fit, on a bad option value.
        self._make_controller(
            epochs or 100, steps_per_epoch or 1000, probe=True
        )
        self.controller = None
        self.schedule = None
        self._optimizer = None
        self._loss_scaled = False
        self._store = None
        self._snapshot = None
        self._pending = None

    def get_config(self):
        return {
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "verbose": self.verbose,
            "monitor": self.monitor,
            "check_every": self.check_every,
            "backup_dir": self.backup_dir,
            "restore_weights": self.restore_weights,
            **self.controller_options,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _make_controller(self, epochs, steps_per_epoch, chunk=1, probe=False):
        """The controller for a budget, with `chunk` = steps_per_execution.

        Bins default to one chunk: Keras reports one loss per chunk, and
        splitting it into per-step bins would feed the detector repeated
        values (its noise estimate would collapse).
        """
        options = dict(self.controller_options)
        bin_steps = options.setdefault("bin_steps", chunk)
        if bin_steps % chunk:
            raise ValueError(
                "Argument `bin_steps` must be a multiple of the model's "
                f"steps_per_execution ({chunk}): Keras reports one loss per "
                f"chunk of {chunk} steps. Received: bin_steps={bin_steps}"
            )
        check_every = self.check_every
        if check_every == "epoch":
            check_every = steps_per_epoch
        if check_every is not None:
            # A check happens at the end of a bin.
            check_every = -(-check_every // bin_steps) * bin_steps
        return AutoLRController(
            total_steps=epochs * steps_per_epoch,
            check_every=None if probe else check_every,
            **options,
        )

    # ------------------------------------------------------------------
    # Training hooks.

    def on_train_begin(self, logs=None):
        epochs, steps_per_epoch = self._budget()
        chunk = int(getattr(self.model, "steps_per_execution", 1) or 1)
        controller = self._make_controller(epochs, steps_per_epoch, chunk)
        self._chunk = chunk
        if (
            self.controller is None
            or self.controller.get_config() != controller.get_config()
        ):
            self.controller = controller
        self._steps_per_epoch = steps_per_epoch
        self._warn_if_tests_come_late()
        if self.backup_dir is not None:
            self._store = StateStore(self.backup_dir)
        self._snapshot = WeightSnapshot(self.model)  # Confirmed.
        self._pending = WeightSnapshot(self.model)  # Not judged yet.
        self._snapshot_checks = 0
        self._install()
        self._resume_pending = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._resume_pending:
            # Only now is the first epoch of this fit known (a resumed run
            # starts at `initial_epoch`, set by fit or BackupAndRestore).
            self._resume(epoch)
            self._resume_pending = False
        self._epoch = epoch
        self._epoch_steps = 0
        self._epoch_total = 0.0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        if self.monitor not in logs:
            raise ValueError(
                f"AutoLR needs the training loss in the logs under "
                f"`{self.monitor}`, but the logs have keys {sorted(logs)}. "
                "Pass `monitor=` the name of the loss entry."
            )
        ctl = self.controller
        was_warmup = ctl.phase != DECAY
        checks = ctl.num_checks
        revision = ctl.revision
        # Keras logs the running mean of the epoch: recover the mean of the
        # steps run since the last call (one step, or one chunk of
        # `steps_per_execution` steps).
        steps = batch + 1
        total = float(logs[self.monitor]) * steps
        chunk = steps - self._epoch_steps
        if math.isfinite(self._epoch_total):
            ctl.update((total - self._epoch_total) / chunk, num_steps=chunk)
        else:
            # A non-finite loss earlier in the epoch poisoned the running
            # mean until the epoch ends: these steps' losses are unknown.
            ctl.skip(num_steps=chunk)
        self._epoch_steps, self._epoch_total = steps, total
        self.schedule.sync(horizon=self._chunk)
        if self._loss_scaled:
            # A step that the loss-scale optimizer skipped (non-finite
            # gradients) did not advance `iterations`: keep the schedule on
            # the count of batches run, which is the budget's clock.
            self.schedule.align(int(self._optimizer.iterations.numpy()))
        self._add_logs(logs)
        if was_warmup and ctl.phase == DECAY:
            self._on_switch()
        elif not was_warmup and ctl.revision != revision:
            self._on_rescue()
        elif self.restore_weights and ctl.num_checks != checks:
            self._keep_weights(at_check=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            self._add_logs(logs)
        if self.restore_weights:
            self._keep_weights()
        if self._store is not None:
            state = self.controller.get_state()
            state[WEIGHT_STEPS] = self._save_weights()
            self._store.save(epoch + 1, state)

    def on_train_end(self, logs=None):
        self._uninstall()
        if self._snapshot is not None:
            self._snapshot.release()
            self._pending.release()

    # ------------------------------------------------------------------

    def _warn_if_tests_come_late(self):
        """Bins of a whole chunk can push the first test up the ramp."""
        ctl = self.controller
        first = ctl.first_test_step
        if (
            ctl.steps
            or ctl.bin_steps == 1
            or first <= _LATE_TEST * ctl.ramp_steps
        ):
            return
        warnings.warn(
            f"AutoLR sees one loss per bin of {ctl.bin_steps} steps (the "
            f"model's steps_per_execution), so its first test of the loss "
            f"minimum can only run at step {first}, "
            f"{first / ctl.ramp_steps:.0%} of the way up the warmup ramp "
            f"(LR {ctl.ramp_lr_at(float(first)):.3g} by then): it may see "
            "the minimum too late. Lower steps_per_execution, train for "
            "more steps, or pass a smaller `min_bins` (at least 3; fewer "
            "points make each test less reliable).",
            RuntimeWarning,
            stacklevel=2,
        )

    def _budget(self):
        steps = self.steps_per_epoch or self.params.get("steps")
        if not steps:
            raise ValueError(
                "AutoLR needs the number of steps per epoch to plan its "
                "budget, and fit() does not know it (a dataset of unknown "
                "cardinality, e.g. from a generator or after filter()). "
                "Pass `steps_per_epoch=` to fit() or to AutoLR(), or use a "
                "dataset of known size."
            )
        fit_epochs = self.params.get("epochs")
        epochs = self.epochs or fit_epochs
        if self.epochs and fit_epochs and fit_epochs > self.epochs:
            raise ValueError(
                f"fit(epochs={fit_epochs}) runs past the AutoLR budget of "
                f"AutoLR(epochs={self.epochs}): the LR is 0 after epoch "
                f"{self.epochs}. Give both the same number of epochs."
            )
        return int(epochs), int(steps)

    def _resume(self, epoch):
        """Brings the controller to the start of epoch `epoch`.

        A fit that starts at epoch 0 starts a new schedule, even with a
        callback that has run before; the states and weight copies of an
        earlier run in `backup_dir` are deleted then (they would be taken
        for this run's after a restart).
        """
        ctl = self.controller
        expected = epoch * self._steps_per_epoch
        if epoch == 0:
            ctl.reset()
            if self._store is not None:
                self._store.clear()
        elif ctl.steps != expected:
            state = self._store.load(epoch) if self._store else None
            if state is None:
                raise ValueError(
                    f"Training starts at epoch {epoch} (step {expected}), "
                    f"but AutoLR's state is at step {ctl.steps} and "
                    + (
                        f"{self.backup_dir} has no state saved after epoch "
                        f"{epoch} (it has {self._store.epochs()}). "
                        if self._store
                        else "no `backup_dir` was given. "
                    )
                    + "To resume a run, pass the same `backup_dir=` to "
                    "AutoLR in the interrupted and the resumed run; to start "
                    "a new schedule, fit from epoch 0."
                )
            ctl.set_state(state)
        if self._store and self.restore_weights and not self._snapshot.taken:
            self._load_weights(epoch)
        self.schedule.sync(force=True)
        self.schedule.align(int(self._optimizer.iterations.numpy()), force=True)

    def _keep_weights(self, at_check=False):
        """Keeps a copy of the weights while the loss is at its lowest.

        The loss of a step is measured before its update, so the weights
        copied now are judged only by the losses that follow: a copy is
        pending until the next call still finds the loss at its lowest,
        and dropped if not (at the edge of a cliff, the last update is
        often the one that blew up). Only confirmed copies are restored.

        At a test, a new copy is taken only when the detector sees the
        minimum coming (its probability is at least 0.5) or the last one
        is `_SNAPSHOT_CHECKS` tests old: a copy at every test of a steadily
        falling loss would cost more than the tests themselves.
        """
        ctl = self.controller
        if not ctl.at_lowest_loss():
            self._pending.release()
            return
        if self._pending.taken:
            self._snapshot, self._pending = self._pending, self._snapshot
            self._pending.release()
        if at_check:
            fresh = ctl.num_checks - self._snapshot_checks < _SNAPSHOT_CHECKS
            if fresh and (ctl.last_probability or 0.0) < 0.5:
                return
        if self._pending.take(ctl.steps):
            self._snapshot_checks = ctl.num_checks

    def _save_weights(self):
        """Writes the weight copies to `backup_dir`; returns their steps,
        `[confirmed, pending]` (`None` where there is none), for the state
        of this epoch."""
        steps = []
        for snapshot in (self._snapshot, self._pending):
            if snapshot.taken:
                self._store.save_weights(snapshot.step, snapshot.values)
            steps.append(snapshot.step if snapshot.taken else None)
        return steps

    def _load_weights(self, epoch):
        """Reads back the weight copies named by the state after `epoch`
        epochs, so that a restarted run rolls back to the same weights."""
        state = self._store.load(epoch) or {}
        steps = state.get(WEIGHT_STEPS) or [None, None]
        pairs = zip((self._snapshot, self._pending), steps, strict=True)
        for snapshot, step in pairs:
            if step is None:
                continue
            values = self._store.load_weights(step)
            if values is None:
                warnings.warn(
                    f"AutoLR: the weight copy of step {step} named by the "
                    f"state after epoch {epoch} is missing from "
                    f"{self.backup_dir}; a rollback will use the copies "
                    "kept from now on.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return
            snapshot.load(step, values)

    def _restore_weights(self):
        """Puts back the confirmed copy (else the pending one); returns the
        step it was taken at, or None if there is none."""
        for snapshot in (self._snapshot, self._pending):
            if snapshot.taken:
                snapshot.restore()
                return snapshot.step
        return None

    def _on_switch(self):
        ctl = self.controller
        event = ctl.switch_event
        if self.restore_weights:
            # Weights that produced a non-finite loss are not worth keeping.
            kept = self._restore_weights()
            if kept is not None and event["reason"] == "divergence":
                warnings.warn(
                    f"AutoLR: restored the weights and optimizer state kept "
                    f"at step {kept}, before the loss became non-finite at "
                    f"step {event['step'] - 1}.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            elif kept is None and not all_finite(self.model.get_weights()):
                warnings.warn(
                    "AutoLR: the weights became non-finite before any copy "
                    "was kept; training continues from non-finite weights. "
                    "Lower `min_lr` or `max_lr`.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if self.verbose:
            self._print_switch()

    def _on_rescue(self):
        """The loss blew up during decay: the controller restarted the
        decay at half the LR; put back the weights of the lowest loss."""
        event = self.controller.events[-1]
        kept = self._restore_weights() if self.restore_weights else None
        if kept is not None:
            warnings.warn(
                f"AutoLR: restored the weights and optimizer state kept at "
                f"step {kept} (lowest loss) after the loss blew up at step "
                f"{event['step'] - 1}.",
                RuntimeWarning,
                stacklevel=3,
            )
        if self.verbose:
            print(
                f"AutoLR: loss blew up during decay at step "
                f"{event['step'] - 1} ({event['reason']}); decay restarts at "
                f"LR {event['peak_lr']:.3g}"
                + (
                    "."
                    if kept is None
                    else f" from the weights of step {kept}."
                )
            )

    def _install(self):
        """Makes the optimizer evaluate the AutoLR schedule in-graph."""
        optimizer = self.model.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if isinstance(
            inner._learning_rate,
            keras.optimizers.schedules.LearningRateSchedule,
        ) or not isinstance(inner._learning_rate, keras.Variable):
            raise ValueError(
                "AutoLR sets the learning rate itself, but the optimizer was "
                "built with learning_rate="
                f"{inner._learning_rate!r}. Compile with a plain float "
                "learning rate instead (its value is not used), e.g. "
                "`AdamP()` or `keras.optimizers.Lamb()`."
            )
        if self.schedule is None or self.schedule.controller is not (
            self.controller
        ):
            with self.model.distribute_strategy.scope():
                self.schedule = AutoLRSchedule(self.controller)
        self.schedule.sync(force=True)
        self.schedule.align(int(inner.iterations.numpy()), force=True)
        # The LR variable stays in place (and tracked), so checkpoints of
        # the optimizer keep their layout; only the read is redirected.
        schedule = self.schedule
        inner._get_current_learning_rate = lambda: schedule(inner.iterations)
        self._optimizer = inner
        self._loss_scaled = inner is not optimizer
        self.model.make_train_function(force=True)

    def _uninstall(self):
        inner = self._optimizer
        if inner is None:
            return
        del inner._get_current_learning_rate
        inner._learning_rate.assign(self.controller.lr)
        self._optimizer = None
        self.model.train_function = None

    def _add_logs(self, logs):
        """The LR and phase of the last step run."""
        ctl = self.controller
        last = max(ctl.steps - 1, 0)
        logs["learning_rate"] = float(ctl.lr_at(last))
        logs["autolr_phase"] = int(last >= ctl.switch_step)

    def _print_switch(self):
        ctl = self.controller
        step = ctl.switch_step
        epoch = step // self._steps_per_epoch + 1
        remaining = ctl.total_steps - step
        how = {
            "minimum": "loss passed its minimum",
            "divergence": "loss became non-finite",
            "explosion": "loss rose back to its starting level",
            "cap": "warmup cap reached",
        }[ctl.switch_event["reason"]]
        lr_min = ctl.minimum_lr
        lr_min_text = "n/a" if lr_min is None else f"{lr_min:.3g}"
        print(
            f"AutoLR: warmup ended at step {step} (epoch {epoch}), "
            f"{how}: LR at loss minimum {lr_min_text}, peak LR "
            f"{ctl.peak_lr:.3g} (from {float(ctl.lr_at(step - 1)):.3g}); "
            f"{ctl.decay} decay to 0 over the remaining {remaining} steps."
        )


def _check_optional_int(name, value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer or None. "
            f"Received: {name}={value!r}"
        )
