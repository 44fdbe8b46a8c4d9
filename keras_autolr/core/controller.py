"""The AutoLR state machine: adaptive warmup, then decay, over a step budget.

Framework-free. It takes the training loss of each step (or the mean of a
chunk of steps), records it (`LossRecord`), has the tests of warmup run
(`WarmupTests`) and the decay guarded (`decay`), and returns a `Report`: the
learning rate of the next step, what was decided, and the views the Keras
adapter acts on. Custom training loops use it directly
(`lr = ctl.step(loss)`). All time is counted in optimizer steps; epochs
appear only in the Keras adapter. The whole schedule is a pure function of
the decisions made on the way (`Decisions`: the switch step, the landing LR
and any decay restarts), which only the controller changes, so the Keras
adapter evaluates it in-graph every step and touches the device only when a
decision changes it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from keras_autolr.core import checkpoint, decay, messages, options
from keras_autolr.core import checks as check
from keras_autolr.core.events import DECAY, WARMUP, EventLog, Report
from keras_autolr.core.losses import LossRecord, to_json
from keras_autolr.core.schedule import Decisions
from keras_autolr.core.smoothers import make_detector
from keras_autolr.core.views import ControllerViews
from keras_autolr.core.warmup import WarmupTests


class AutoLRController(ControllerViews):
    """Adaptive warmup (AutoWU) and decay to zero over `total_steps` steps.

    Warmup starts at `min_lr` and grows the LR every step so that it would
    reach `max_lr` at the cap, `max_warmup_fraction * total_steps`. Every
    `check_every` steps a test asks whether the loss has passed its
    minimum (`warmup.minimum_test`: a Gaussian process, run once the loss
    has clearly fallen); after `patience` consecutive "yes" the LR rolls
    back to the landing LR, `landing` (half) times the LR at the smoothed
    loss minimum, and decays from there to 0 at `total_steps`. A loss back
    at its starting level ends warmup at the next test, at most at half the
    LR tested; a non-finite loss at once. If the cap comes first, warmup
    ends there at `landing` times the LR of the smoothed minimum so far.
    During decay, a loss that blows up restarts the decay from half the LR
    (a rescue). Each test runs on a worker thread and acts one test later
    (`WarmupTests`), so decisions are the same in every process.

    Args:
        total_steps: the step budget; the LR is 0 from this step on.
        **options: the options of the schedule, each documented, with its
            default, in `keras_autolr.core.options.Settings`; readable,
            checked, as `ctl.settings` (`ctl.settings.check_every`).

    Example:

    >>> ctl = AutoLRController(total_steps=1000)
    >>> lr = ctl.lr  # 1e-4, for the first step.
    >>> while ctl.phase == "warmup":
    ...     loss = 1.0 + (math.log10(lr) + 2.0) ** 2  # Best LR 1e-2.
    ...     lr = ctl.step(loss)
    >>> ctl.switch_event["reason"], round(math.log10(ctl.lr_at_minimum))
    ('minimum', -2)
    """

    def __init__(self, total_steps: int, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(options.OPTION_NAMES))
        if unknown:
            raise TypeError(
                "Unrecognized keyword arguments passed to AutoLRController: "
                f"{unknown}. Valid options: {list(options.OPTION_NAMES)}"
            )
        self.settings = settings = options.Settings(total_steps, **kwargs)
        self.shape = settings.shape()
        self._record = LossRecord(settings.bin_steps, settings.max_bins)
        self._decisions = Decisions(
            self.shape, settings.ramp_steps, settings.max_lr
        )
        detector = make_detector(
            settings.smoother,
            num_tests=settings.num_tests,
            confidence=settings.confidence,
            seed=settings.seed,
        )
        self._tests = WarmupTests(
            detector,
            self.shape,
            settings.ramp_steps,
            settings.check_every,
            settings.patience,
            settings.min_bins,
            settings.background,
            settings.act_at_once,
            settings.filters,
            settings.landing,
        )
        self.reset()

    @classmethod
    def reference(
        cls, total_steps: int, steps_per_epoch: int, **overrides: Any
    ) -> AutoLRController:
        """The AutoWU paper's setting (Kim et al., 2021) in one call:
        `docs/reference.md` compares each option with the paper and its
        public code, and lists the differences that remain.

        Args:
            total_steps: the step budget, `epochs * steps_per_epoch`.
            steps_per_epoch: steps in one epoch: the test period.
            **overrides: any other `AutoLRController` argument, replacing
                the reference's value (e.g. `smoother="tfp"`).

        Example:

        >>> ctl = AutoLRController.reference(90 * 100, steps_per_epoch=100)
        >>> s = ctl.settings
        >>> s.check_every, s.patience, s.act_at_once, s.filters
        (100, 3, True, False)
        """
        check.check_int("steps_per_epoch", steps_per_epoch, 1)
        preset = {**options.AUTOWU, "check_every": steps_per_epoch}
        return cls(total_steps, **{**preset, **overrides})

    # ------------------------------------------------------------------
    # Configuration and state.

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for `AutoLRController(**config)`
        (all but `background`, which changes no decision)."""
        return self.settings.config()

    def reset(self) -> None:
        """Forgets every recorded loss and decision: a new schedule."""
        self._record.reset()
        self._decisions.reset()
        self._tests.reset()
        self._test_mark = 0  # Test points passed: steps // check_every.
        self._events = EventLog()

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as JSON-compatible values.

        `json.dumps(ctl.get_state())` is a complete checkpoint; non-finite
        bin values are stored as `None`. Waits for a test in flight: the
        state holds its answer.
        """
        return checkpoint.pack(
            self.get_config(),
            record=self._record.get_state(),
            plan=self._decisions.get_state(),
            warmup=self._tests.get_state(),
            check_mark=self._test_mark,
            events=self._events.get_state(),
        )

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AutoLRController:
        """A controller rebuilt from a `get_state()` (e.g. a saved file).

        Raises:
            ValueError: `state` is not a complete controller state.
        """
        config = checkpoint.config_of(state)
        try:
            controller = cls(**config)
        except (TypeError, ValueError) as error:
            raise checkpoint.damaged(error) from error
        controller.set_state(state)
        return controller

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a `get_state()` of a controller with the same config;
        on an error, the controller is as it was.

        Raises:
            ValueError: the state is of another format or configuration,
                or damaged.
        """
        parts = checkpoint.unpack(state, self.get_config())
        before = self.get_state()
        try:
            self._set_parts(parts)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            self._set_parts(checkpoint.unpack(before, self.get_config()))
            raise checkpoint.damaged(error) from error

    def _set_parts(self, parts: dict[str, Any]) -> None:
        self._record.set_state(parts["record"])
        self._decisions.set_state(parts["plan"])
        self._tests.set_state(parts["warmup"])
        self._test_mark = int(parts["check_mark"])
        self._events.set_state(parts["events"])

    # ------------------------------------------------------------------
    # Feeding losses.

    def step(self, loss: float) -> float:
        """Records the loss of one step; returns the LR of the next step."""
        return self.update(loss, num_steps=1).lr

    def update(self, loss: float, num_steps: int = 1) -> Report:
        """Records the mean loss of the next `num_steps` steps.

        Args:
            loss: mean training loss over those steps (NaN/inf allowed: a
                non-finite loss during warmup ends it at once).
            num_steps: how many steps the mean covers, e.g. the chunk size
                with `steps_per_execution`; at most one bin of the record
                (`bin_steps`, which a chunk size divides).

        Returns:
            A `Report`: the LR of the next step, and what was decided.

        Raises:
            ValueError: `num_steps` is wider than a bin. One mean spread
                over several bins would give the tests repeated values, on
                which the noise estimate collapses (a flat loss then
                passes for a fall and a blow-up); nothing is recorded.
        """
        check.check_int("num_steps", num_steps, 1)
        if num_steps > self._record.bin_width:
            raise ValueError(
                messages.mean_wider_than_a_bin(
                    num_steps, self._record.bin_width
                )
            )
        return self._advance(float(loss), num_steps, known=True)

    def update_steps(self, losses: Any) -> Report:
        """Records the loss of each of the next `len(losses)` steps, then
        decides once, as `update` does for the mean of a chunk.

        Args:
            losses: one training loss per step, in order (NaN/inf allowed).

        Returns:
            A `Report`: the LR of the next step, and what was decided.
        """
        losses = np.asarray(losses, dtype=np.float64)
        if losses.ndim != 1 or not losses.size:
            raise ValueError(
                "Argument `losses` must be a non-empty 1-D sequence of "
                f"per-step losses. Received: shape {losses.shape}"
            )
        return self._advance(losses, losses.size, known=True)

    def skip(self, num_steps: int = 1) -> Report:
        """Advances over `num_steps` steps whose loss is unknown.

        They are recorded as missing (left out of every test) and trigger
        no decision, except the end of warmup at the cap.
        """
        check.check_int("num_steps", num_steps, 1)
        return self._advance(math.nan, num_steps, known=False)

    def _advance(self, loss: Any, num_steps: int, known: bool) -> Report:
        """`loss`: the mean loss of the `num_steps` steps, or an array of
        one loss per step."""
        settings = self.settings
        was_warmup = self.phase == WARMUP
        first_step = self.steps
        events, tests = len(self._events), self._tests.tests_run
        if np.ndim(loss):
            closed = self._record.add_each(loss)
            loss = float(np.mean(loss))
        else:
            closed = self._record.add(loss, num_steps)
        test_due = False
        every = settings.check_every
        if closed is not None and closed // every > self._test_mark:
            self._test_mark = closed // every
            test_due = True
        end = self.steps
        # Unknown losses decide nothing; only the cap can end warmup.
        if known and not math.isfinite(loss):
            self._tests.drop_pending()
            if self.phase == WARMUP:
                self._diverged(loss, first_step)
            elif not was_warmup and decay.restart_after_non_finite(
                self._record, self._decisions, settings.total_steps
            ):
                self._rescue("divergence", loss, self.steps)
        elif was_warmup:
            verdicts = self._tests.at_test_point(
                self._record, end, test_due, known
            )
            for verdict in verdicts:
                if verdict.reason is None:
                    self._decisions.set_landing(verdict.landing_lr)
                else:
                    self._switch(
                        verdict.reason, verdict.step, verdict.landing_lr
                    )
        elif (
            known
            and test_due
            and decay.blew_up_in_decay(
                self._record,
                self._decisions,
                settings.total_steps,
                settings.patience * every,
                every,
            )
        ):
            self._rescue("explosion", loss, self.steps)
        if was_warmup and self.phase == DECAY and not self._events:
            self._at_cap()
        return self._report(
            tested=self._tests.tests_run != tests,
            switch=self._events.first("switch", since=events),
            rescue=self._events.first("rescue", since=events),
        )

    def _at_cap(self) -> None:
        """Warmup reached the cap. With no test acted on, the decay starts
        where the ramp was safe: at most half its last LR, and the LR of
        the lowest loss (from the next step, where a chunk ran past the
        cap: the LR of a step run is never rewritten)."""
        cap = self.switch_step
        if self._tests.minimum_lr is not None:
            self._switch("cap", cap)
            return
        safe = self._tests.safe_lr(self._record, cap)
        if self.steps == cap:
            self._switch("cap", cap, safe)
        else:
            self._decisions.restart(self.steps, safe)
            self._switch("cap", cap)
            self._events.last()["peak_lr"] = safe

    def _diverged(self, loss: float, first_step: int) -> None:
        """A non-finite loss during warmup: end it now, at a safe LR."""
        now = self.steps
        safe = self._tests.safe_lr(self._record, first_step)
        last = float(self.lr_at(now - 1))
        text = messages.diverged_in_warmup(loss, now - 1, last, safe)
        warnings.warn(text, RuntimeWarning, stacklevel=4)
        self._switch("divergence", now, safe)

    def _rescue(self, reason: str, loss: float, step: int) -> None:
        """Restarts the decay at step `step` from half the LR before it;
        the Keras callback also puts back the weights kept at the lowest
        loss."""
        lr_before = float(self.lr_at(step - 1))
        peak = 0.5 * lr_before
        self._decisions.restart(step, peak)
        event = {"step": step, "event": "rescue", "reason": reason}
        event.update(lr_before=lr_before, peak_lr=peak, loss=to_json(loss))
        self._events.add(event)
        text = messages.rescue_warning(event)
        warnings.warn(text, RuntimeWarning, stacklevel=5)

    def _switch(
        self, reason: str, step: int, landing_lr: float | None = None
    ) -> None:
        """Ends warmup at `step`, from `landing_lr` (`None`: the cap, where
        the decisions already end it)."""
        if landing_lr is not None:
            self._decisions.switch(step, landing_lr)
        event = {"step": step, "event": "switch", "reason": reason}
        event.update(
            lr_before=float(self.lr_at(step - 1)),
            peak_lr=self._decisions.landing_lr,
            minimum_lr=self._tests.minimum_lr,
        )
        self._events.add(event)
