"""`AutoLR`: the Keras adapter of the AutoLR controller.

Data path: Keras step -> `on_train_batch_end` -> where a decision needs
them, the losses of the steps run since the last read (`StepLosses`, as
the train step recorded them; or `LoggedLosses`, from the logs after every
chunk) -> `AutoLRController` -> its `Report` -> the `InstalledSchedule`
(whose values are written only when a decision changes them), and the
`WeightKeeper`'s copies. The optimizer evaluates the schedule in-graph
every step. Calls run one way: the callback pulls the losses and calls the
controller; everything it acts on comes back in the `Report`.
"""

import warnings

import keras
import numpy as np

from keras_autolr.core import checks as check
from keras_autolr.core import messages, options
from keras_autolr.keras import backup, budget, compat, resume, tensorboard
from keras_autolr.keras.backup import StateStore
from keras_autolr.keras.epoch_log import EpochLog
from keras_autolr.keras.loss_capture import LoggedLosses, StepLosses
from keras_autolr.keras.lr_schedule import (
    FoundSchedule,
    InstalledSchedule,
    summary,
)
from keras_autolr.keras.weights import (
    WeightKeeper,
    all_finite,
    current_weights,
    fingerprint,
)


@keras.saving.register_keras_serializable(package="keras_autolr")
class AutoLR(keras.callbacks.Callback):
    """Automatic warmup and decay of the learning rate (AutoWU).

    The LR starts at `min_lr` and grows every step until a Gaussian process
    fitted to the training loss says the loss has passed its minimum; it
    then puts back weights from at or below the minimum's LR, lands at half
    that LR (`landing`) and decays to 0 at the end of the `epochs` budget.
    There is no peak LR and no warmup length to tune.

    The schedule is evaluated in the compiled train step, every step, so it
    is exact with `steps_per_execution > 1`, under `tf.distribute` and with
    XLA; the train step records every step's loss on the device, which the
    callback reads only where a decision needs it
    (`docs/architecture.md`).

    Args:
        epochs: the training budget in epochs. Defaults to `None`: the
            `epochs` of `fit`.
        steps_per_epoch: steps in one epoch. Defaults to `None`: the number
            of steps `fit` reports (the `steps_per_epoch` of `fit`, or the
            size of a dataset of known cardinality).
        verbose: `0` silent; `1` or `2` (as `fit` takes them) a line when
            warmup ends, at each decay restart, when `fit` ends before the
            budget, and a summary of the run at the end of `fit`. Defaults
            to `1`.
        monitor: the log entry holding the training loss. Defaults to
            `"loss"`, recorded for every step. Any other entry, and the
            loss of a model whose train step is its own, is read from the
            logs after every chunk (a host sync per chunk): one mean per
            chunk of `steps_per_execution` steps.
        check_every: steps between two tests of the loss minimum, or
            `"epoch"` for once per epoch as the AutoWU reference. Defaults to
            `None`: about 100 tests over the warmup cap.
        backup_dir: a directory for AutoLR's state (and weight copies) at
            every epoch end, the last 3 kept, each file checked on use: a
            run whose model resumes at epoch `k` (`BackupAndRestore`, or
            `fit(initial_epoch=k)`) continues with the same decisions. A
            `fit` from epoch 0 deletes AutoLR's files there. Defaults to
            `None`: state kept in memory only.
        restore_weights: keep host copies of the weights and optimizer
            state at the lowest loss, and put one back when warmup ends
            (the newest at or below the LR of the smoothed minimum: the
            overshoot can damage a network) and when the loss blows up
            during decay. Costs up to three copies in host memory.
            Defaults to `True`.
        **kwargs: options of `AutoLRController`
            (`keras_autolr.core.options.Settings`) but `check_every`,
            `background` and `chunk_steps` (the model's
            `steps_per_execution`, where tests and the cap fall). Read from
            the logs, the loss comes once per chunk: `bin_steps` then
            defaults to, and must be a multiple of, `steps_per_execution`.

    Logs: adds `learning_rate` (the LR of the last step run) and
    `autolr_phase` (the int 0 during warmup, 1 during decay) to the batch
    and epoch logs of the callbacks that come after it in the list.
    `History` keeps the int; `fit`'s progress bar prints every value as a
    float, `autolr_phase` as `0.0000e+00` or `1.0000`.

    After `fit` (ended, stopped, or interrupted in a train step) the
    optimizer's learning rate is the value it was compiled with again.
    `summary` says what the run found; `found_schedule()` gives it as a
    Keras schedule for runs without AutoLR. `epoch_log` (`EpochLog`) holds
    the steps per epoch of the last `fit` and `validation_losses`: `(step,
    val_loss)` for each epoch end whose logs hold `val_loss`, after `step`
    optimizer steps (saved in `backup_dir`, drawn by `keras_autolr.plot`).
    With a `keras.callbacks.TensorBoard` in `fit`, the plot is logged there
    at the end of `fit`, as the image `autolr/schedule`. A callback that
    also sets the LR (`ReduceLROnPlateau`, `LearningRateScheduler`) is
    refused at `fit` start.

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
        check.check_bool("restore_weights", restore_weights)
        # Fails now, not at the first fit, on a bad argument.
        controller_options = budget.check_arguments(
            kwargs, epochs, steps_per_epoch, verbose, monitor, check_every
        )
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.verbose = int(verbose)
        self.monitor = monitor
        self.check_every = check_every
        self.backup_dir = None if backup_dir is None else str(backup_dir)
        self.restore_weights = restore_weights
        self.controller_options = controller_options
        self.controller = None
        self.epoch_log = EpochLog()
        self._replanned_from = None
        self._report = None
        self._schedule = None
        self._store = None
        self._weights = None
        self._losses = None

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

    @classmethod
    def reference(cls, epochs=None, **overrides):
        """AutoLR in the AutoWU paper's setting (Kim et al., 2021).

        `keras_autolr.core.options.AUTOWU`, one test per epoch
        (`check_every="epoch"`) and no weight copies
        (`restore_weights=False`); `docs/reference.md` compares each option
        with the paper's code.

        Args:
            epochs: the training budget in epochs. Defaults to `None`: the
                `epochs` of `fit`.
            **overrides: any other `AutoLR` argument, replacing the
                reference's value (e.g. `smoother="tfp"`, `verbose=0`).

        Example:

        ```python
        model.fit(x, y, epochs=90, callbacks=[AutoLR.reference(epochs=90)])
        ```
        """
        preset = {
            **options.AUTOWU,
            "check_every": "epoch",
            "restore_weights": False,
        }
        preset.update(overrides)
        return cls(epochs=epochs, **preset)

    # ------------------------------------------------------------------
    # Training hooks.

    def on_train_begin(self, logs=None):
        # Before anything is installed: a conflict leaves the model as is.
        budget.check_other_callbacks(compat.fit_callbacks(self))
        epochs, steps_per_epoch = budget.budget(
            self.params, self.epochs, self.steps_per_epoch
        )
        chunk = int(getattr(self.model, "steps_per_execution", 1) or 1)
        # Keras's own train step updates the loss tracker, where AutoLR's
        # records every step's loss; otherwise the logs hold the running
        # mean, once per chunk (every step's loss at one step per chunk).
        record = self.monitor == "loss" and (
            compat.uses_builtin_train_step(self.model)
        )
        controller = budget.make_controller(
            self.controller_options,
            self.check_every,
            self.monitor,
            epochs,
            steps_per_epoch,
            chunk,
            per_step=chunk == 1 or record,
        )
        self._chunk = chunk
        self._replanned_from = None
        if (
            self.controller is None
            or self.controller.get_config() != controller.get_config()
        ):
            if self.controller is not None and self.controller.steps:
                self._replanned_from = self.controller.total_steps
            self.controller = controller
        self._steps_per_epoch = steps_per_epoch
        self.epoch_log.steps_per_epoch = steps_per_epoch
        budget.warn_if_tests_come_late(self.controller)
        budget.warn_if_budget_too_short(self.controller)
        if self.backup_dir is not None:
            self._store = StateStore(self.backup_dir)
            self._write_safely(self._store.ensure)
        self._weights = WeightKeeper(self.model, self.controller.ramp_lr_at)
        # Before the schedule, which rebuilds the train function.
        self._losses = (
            StepLosses(self.model, self._read_every(), chunk, steps_per_epoch)
            if record
            else LoggedLosses(self.monitor, chunk)
        )
        self._schedule = InstalledSchedule(
            self.model, self.controller, on_failure=self._release
        )
        self._resume_pending = True
        self._restored = []

    def on_epoch_begin(self, epoch, logs=None):
        if self._resume_pending:
            # Only now is the first epoch of this fit known (a resumed run
            # starts at `initial_epoch`, set by fit or BackupAndRestore).
            try:
                self._resume(epoch)
            except BaseException:
                self._release()
                raise
            self._resume_pending = False
        self._losses.start_epoch()
        self._epoch_start = self.controller.steps
        self._ran = 0  # Steps run in this epoch.

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        # Keras numbers a short last chunk of an epoch as a whole one.
        self._ran = min(batch + 1, self._steps_per_epoch)
        self._add_logs(logs, self._epoch_start + self._ran - 1)
        self._feed(logs)

    def _feed(self, logs, flush=False):
        """Feeds the controller the losses of the steps run, where a
        decision needs them (or with `flush`), and acts on its report."""
        losses = self._losses.read(self._ran, logs, self._report, flush)
        if losses is None:
            return  # No decision needs the losses yet.
        report = self._report = _update(self.controller, losses)
        self._schedule.update(report, horizon=self._losses.horizon(report))
        if report.switch is not None:
            self._on_switch(report.switch)
        elif report.rescue is not None:
            self._on_rescue(report.rescue)
        elif self.restore_weights and report.tested:
            self._weights.offer(report, at_test=True)

    def on_epoch_end(self, epoch, logs=None):
        # An epoch cut short (the data ran out) ends without its last read.
        self._feed({}, flush=True)
        if logs is not None:
            self._add_logs(logs, self.controller.steps - 1)
        self.epoch_log.add(self.controller.steps, logs)
        if self.restore_weights:
            self._weights.offer(self._report)
        if self._store is not None:
            state = self.controller.get_state()
            state[backup.FINGERPRINT] = fingerprint(self.model)
            state.update(self.epoch_log.get_state())

            def save():
                state.update(self._weights.save(self._store))
                self._store.save(epoch + 1, state)

            self._write_safely(save)
        self._schedule.warn_if_lr_written(epoch)

    def on_train_end(self, logs=None):
        self._release()
        if self.verbose:
            ctl = self.controller
            if ctl.steps < ctl.total_steps:
                self._say(messages.ended_early(ctl.report(), ctl.total_steps))
            self._say(messages.summary_line(self.summary))
        tensorboard.log_plot(self, compat.fit_callbacks(self))

    def _release(self):
        """Gives the model back its own loss tracker and its optimizer its
        own LR, as compiled: after `fit` (ended, stopped, or failed in a
        train step or in AutoLR), a later `fit` trains as without AutoLR."""
        if self._losses is not None:
            self._losses.remove()
            self._losses = None
        if self._schedule is not None:
            self._schedule.remove()
            self._schedule = None
        if self._weights is not None:
            self._weights.release()

    @property
    def summary(self):
        """What the run found, as a dict (`lr_schedule.summary`)."""
        if self.controller is None:
            return None
        return summary(self.controller, self._restored)

    def found_schedule(self, total_steps=None):
        """The schedule this run found, as a plain serializable Keras
        schedule for runs without AutoLR (`FoundSchedule`: the ramp held at
        the landing LR, then the decay, stretched to `total_steps`,
        defaults to this run's).

        Raises:
            ValueError: before warmup has ended.
        """
        return FoundSchedule.of(self.controller, total_steps)

    def _read_every(self):
        """Steps between two reads of the recorded losses: the test
        interval, or one chunk where the loss-scale optimizer of mixed
        precision may skip a step (the schedule then realigns with the
        optimizer's step counter at every chunk)."""
        optimizer = self.model.optimizer
        if compat.inner_optimizer(optimizer) is not optimizer:
            return self._chunk
        return self.controller.settings.check_every

    def _resume(self, epoch):
        """Brings the controller to the start of epoch `epoch`."""
        resume.start(
            epoch,
            self._steps_per_epoch,
            self.controller,
            self.epoch_log,
            self._weights if self.restore_weights else None,
            self._store,
            self.model,
            replanned_from=self._replanned_from,
            write=self._write_safely,
        )
        self._report = self.controller.report()
        self._schedule.update(self._report, force=True)

    def _say(self, text, mid_epoch=False):
        """Prints `text` as Keras's callbacks do; inside an epoch, on a line
        of its own below `fit`'s progress bar."""
        if mid_epoch and self.params.get("verbose") == 1:
            text = "\n" + text
        compat.print_msg(text)

    def _write_safely(self, write):
        """Runs `write`, a write to `backup_dir`; a failure is a warning,
        and training goes on."""
        try:
            write()
        except OSError as error:
            text = backup.write_failed(self.backup_dir, error)
            warnings.warn(text, RuntimeWarning, stacklevel=3)

    def _on_switch(self, event):
        if self.restore_weights:
            # Weights that produced a non-finite loss are not worth keeping;
            # nor those from past the smoothed minimum, where the LR may
            # have damaged them.
            kept = self._weights.restore(event["minimum_lr"])
            self._note_restored(kept)
            if kept is not None and event["reason"] == "divergence":
                text = messages.restored_before_divergence(kept, event)
                warnings.warn(text, RuntimeWarning, stacklevel=3)
            elif kept is None and not all_finite(current_weights(self.model)):
                text = messages.NO_COPY_BEFORE_DIVERGENCE
                warnings.warn(text, RuntimeWarning, stacklevel=3)
        if self.verbose:
            settings = self.controller.settings
            line = messages.switch_line(event, settings, self._steps_per_epoch)
            self._say(line, mid_epoch=True)

    def _on_rescue(self, event):
        """The loss blew up during decay: the controller restarted the
        decay at half the LR; put back the weights of the lowest loss."""
        kept = self._weights.restore() if self.restore_weights else None
        self._note_restored(kept)
        if kept is not None:
            text = messages.restored_after_blow_up(kept, event)
            warnings.warn(text, RuntimeWarning, stacklevel=3)
        if self.verbose:
            self._say(messages.rescue_line(event, kept), mid_epoch=True)

    def _note_restored(self, kept):
        if kept is not None:
            self._restored.append((self._report.steps, kept))

    def _add_logs(self, logs, step):
        """The LR and phase of `step`, the last step run (decisions are
        made for the steps after the last read, so the plan already holds
        those of the steps run since)."""
        ctl = self.controller
        step = max(step, 0)
        logs["learning_rate"] = float(ctl.lr_at(step))
        logs["autolr_phase"] = int(step >= ctl.switch_step)


def _update(controller, losses):
    """Feeds `controller` the `Losses` of the steps run; returns its
    `Report`."""
    if losses.values is None:
        return controller.skip(losses.num_steps)
    if np.ndim(losses.values):
        return controller.update_steps(losses.values)
    return controller.update(losses.values, num_steps=losses.num_steps)
