"""The AutoLR state machine: adaptive warmup, then decay, over a step budget.

Framework-free. It takes the training loss of each step (or the mean of a
chunk of steps), records it (`LossRecord`), has the tests of warmup run
(`WarmupTests`) and the decay guarded (`decisions`), and returns the
learning rate of the next step; custom training loops use it directly
(`lr = ctl.step(loss)`). All time is counted in optimizer steps; epochs
appear only in the Keras adapter. The whole schedule is a pure function of
the decisions made on the way (`Plan`: the switch step, the peak LR and any
decay restarts), so the Keras adapter evaluates it in-graph every step and
touches the device only when a decision changes it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from keras_autolr import _validation as check
from keras_autolr import (
    controller_state,
    decisions,
    loss_stats,
    messages,
    reference,
    schedules,
    settings,
)
from keras_autolr.detector import make_detector
from keras_autolr.events import EventLog, Report
from keras_autolr.loss_record import LossRecord, to_json
from keras_autolr.plan import Plan
from keras_autolr.warmup import WarmupTests

WARMUP = "warmup"
DECAY = "decay"


class AutoLRController:
    """Adaptive warmup (AutoWU) and decay to zero over `total_steps` steps.

    Warmup starts at `min_lr` and grows the LR every step so that it would
    reach `max_lr` at the cap, `max_warmup_fraction * total_steps`. Every
    `check_every` steps a test asks whether the loss has passed its
    minimum (`decisions.minimum_test`: a Gaussian process, run once the
    loss has clearly fallen); after `patience` consecutive "yes" the LR
    rolls back to `landing` (half) times the LR at the smoothed loss
    minimum and decays from there to 0 at `total_steps`. A loss back at its
    starting level ends warmup at the next test, at most at half the LR
    tested; a non-finite loss at once. If the cap comes first, warmup ends
    there at `landing` times the LR of the smoothed minimum so far. During
    decay, a loss that blows up restarts the decay from half the LR (a
    rescue).

    Each test runs on a background thread and acts one test later
    (`WarmupTests`): training does not wait for it, and decisions are the
    same in every process. The test at the cap acts at once (waited for),
    and `get_state()` waits for a test in flight.

    Args:
        total_steps: the step budget; the LR is 0 from this step on.
        **options: the options of the schedule, each documented in
            `keras_autolr.settings.Settings`: `min_lr`, `max_lr`,
            `max_warmup_fraction`, `warmup`, `decay`, `cooldown_fraction`,
            `check_every`, `patience`, `num_tests`, `confidence`,
            `bin_steps`, `chunk_steps`, `min_bins`, `max_bins`, `seed`,
            `background`, `act_at_once`, `filters`, `smoother` and
            `landing`. These and `total_steps` are readable as attributes
            (`ctl.check_every`), as is `ramp_steps`, the warmup cap.

    The defaults, and the options that were measured and not kept, are
    discussed in `benchmarks/README.md`.

    Example:

    >>> ctl = AutoLRController(total_steps=1000)
    >>> lr = ctl.lr  # 1e-4, for the first step.
    >>> while ctl.phase == "warmup":
    ...     loss = 1.0 + (math.log10(lr) + 2.0) ** 2  # Best LR 1e-2.
    ...     lr = ctl.step(loss)
    >>> ctl.switch_event["reason"], round(math.log10(ctl.peak_lr))
    ('minimum', -2)
    """

    def __init__(self, total_steps: int, **options: Any) -> None:
        unknown = sorted(set(options) - set(settings.OPTIONS))
        if unknown:
            raise TypeError(
                "Unrecognized keyword arguments passed to AutoLRController: "
                f"{unknown}. Valid options: {list(settings.OPTIONS)}"
            )
        self.settings = settings.Settings(total_steps, **options)
        self.detector = make_detector(
            self.smoother,
            num_tests=self.num_tests,
            confidence=self.confidence,
            seed=self.seed,
        )
        self.ramp_steps = self.settings.ramp_steps
        self.shape = self.settings.shape()
        self.record = LossRecord(self.bin_steps, self.max_bins)
        self.plan = Plan(self.shape, self.ramp_steps, self.max_lr)
        self.warmup_tests = WarmupTests(
            self.detector,
            self.plan,
            self.check_every,
            self.patience,
            self.min_bins,
            self.background,
            self.act_at_once,
            self.filters,
            self.landing,
        )
        self.reset()

    def __getattr__(self, name: str) -> Any:
        # The settings, read-only: `ctl.check_every` is
        # `ctl.settings.check_every`.
        if name in settings.FIELDS and "settings" in self.__dict__:
            return getattr(self.settings, name)
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    @classmethod
    def reference(
        cls, total_steps: int, steps_per_epoch: int, **overrides: Any
    ) -> AutoLRController:
        """The AutoWU paper's setting (Kim et al., 2021) in one call:
        `keras_autolr.reference` documents each option against the paper
        and its public code, and the differences that remain.

        Args:
            total_steps: the step budget, `epochs * steps_per_epoch`.
            steps_per_epoch: steps in one epoch: the test period.
            **overrides: any other `AutoLRController` argument, replacing
                the reference's value (e.g. `smoother="tfp"`).

        Example:

        >>> ctl = AutoLRController.reference(90 * 100, steps_per_epoch=100)
        >>> ctl.check_every, ctl.patience, ctl.act_at_once, ctl.filters
        (100, 3, True, False)
        """
        check.check_int("steps_per_epoch", steps_per_epoch, 1)
        options = {**reference.OPTIONS, "check_every": steps_per_epoch}
        return cls(total_steps, **{**options, **overrides})

    # ------------------------------------------------------------------
    # Configuration and state.

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for `AutoLRController(**config)`
        (all but `background`, which changes no decision)."""
        return self.settings.config()

    def reset(self) -> None:
        """Forgets every recorded loss and decision: a new schedule."""
        self.record.reset()
        self.plan.reset()
        self.warmup_tests.reset()
        self._check_mark = 0  # Test points passed: steps // check_every.
        self._events = EventLog()

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as JSON-compatible values.

        `json.dumps(ctl.get_state())` is a complete checkpoint; non-finite
        bin values are stored as `None`. Waits for a test in flight: the
        state holds its answer.
        """
        return controller_state.pack(
            self.get_config(),
            record=self.record.get_state(),
            plan=self.plan.get_state(),
            warmup=self.warmup_tests.get_state(),
            check_mark=self._check_mark,
            events=self._events.get_state(),
        )

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AutoLRController:
        """A controller rebuilt from a `get_state()` (e.g. a saved file)."""
        controller = cls(**controller_state.config_of(state))
        controller.set_state(state)
        return controller

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a `get_state()` of a controller with the same config.

        Raises:
            ValueError: if the state is of another format or configuration.
        """
        parts = controller_state.unpack(state, self.get_config())
        self.record.set_state(parts["record"])
        self.plan.set_state(parts["plan"])
        self.warmup_tests.set_state(parts["warmup"])
        self._check_mark = int(parts["check_mark"])
        self._events.set_state(parts["events"])

    # ------------------------------------------------------------------
    # Read-only views.

    @property
    def steps(self) -> int:
        """Number of steps whose loss has been observed."""
        return self.record.steps

    @property
    def phase(self) -> str:
        """`"warmup"` before the switch step, `"decay"` from it on."""
        return WARMUP if self.steps < self.plan.switch_step else DECAY

    @property
    def switch_step(self) -> int:
        """First step of the decay (the warmup cap until a decision)."""
        return self.plan.switch_step

    @property
    def peak_lr(self) -> float:
        """LR at which the decay starts (provisional during warmup)."""
        return self.plan.peak_lr

    @property
    def first_test_step(self) -> int:
        """The earliest step at which a test can run: `min_bins` bins."""
        step = self.min_bins * self.bin_steps
        return -(-step // self.check_every) * self.check_every

    @property
    def switch_event(self) -> dict[str, Any] | None:
        """The event that ended warmup, once it has."""
        return self._events.first("switch")

    @property
    def minimum_lr(self) -> float | None:
        """LR at the smoothed loss minimum of the latest test, if any."""
        return self.warmup_tests.minimum_lr

    @property
    def lr(self) -> float:
        """LR of the next step, `self.steps`."""
        return float(self.lr_at(self.steps))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Decisions so far, each a dict with at least `step` and `event`."""
        return self._events.all()

    @property
    def rescues(self) -> list[dict[str, Any]]:
        """Decay restarts after the loss blew up during decay, in order."""
        return self._events.all("rescue")

    def lr_at(self, step: Any) -> Any:
        """LR of step(s) `step` under the decisions made so far."""
        return self.plan.lr_at(step)

    def ramp_lr_at(self, step: Any) -> Any:
        """LR of ramp step(s) `step` (whether or not warmup ended there)."""
        return self.shape.warmup_lr(
            step, xp=np if np.ndim(step) else schedules.SCALAR
        )

    def at_lowest_loss(self) -> bool:
        """Whether the loss is now within noise of its lowest level
        (`loss_stats.at_lowest_loss`): the weights are worth keeping."""
        return loss_stats.at_lowest_loss(self.record.bins()[1])

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
        if num_steps > self.record.bin_width:
            raise ValueError(
                messages.mean_wider_than_a_bin(num_steps, self.record)
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
        was_warmup = self.phase == WARMUP
        first_step = self.steps
        events, tests = len(self._events), self.warmup_tests.tests_run
        if np.ndim(loss):
            closed = self.record.add_each(loss)
            loss = float(np.mean(loss))
        else:
            closed = self.record.add(loss, num_steps)
        test_due = False
        if closed is not None and closed // self.check_every > self._check_mark:
            self._check_mark = closed // self.check_every
            test_due = True
        end = self.steps
        # Unknown losses decide nothing; only the cap can end warmup.
        if known and not math.isfinite(loss):
            self.warmup_tests.drop_pending()
            if self.phase == WARMUP:
                self._diverged(loss, first_step)
            elif not was_warmup and decisions.restart_after_non_finite(
                self.record, self.plan, self.total_steps
            ):
                self._rescue("divergence", loss, self.steps)
        elif was_warmup:
            switch = self.warmup_tests.at_test_point(
                self.record, end, test_due, known
            )
            if switch is not None:
                self._switch(switch.reason, switch.step, switch.peak_lr)
        elif (
            known
            and test_due
            and decisions.blew_up_in_decay(
                self.record,
                self.plan,
                self.total_steps,
                self.patience * self.check_every,
                self.check_every,
            )
        ):
            self._rescue("explosion", loss, self.steps)
        if was_warmup and self.phase == DECAY and not self._events:
            self._switch("cap", self.switch_step)
        return Report(
            lr=self.lr,
            tested=self.warmup_tests.tests_run != tests,
            switch=self._events.first("switch", since=events),
            rescue=self._events.first("rescue", since=events),
        )

    def _diverged(self, loss: float, first_step: int) -> None:
        """A non-finite loss during warmup: end it now, at a safe LR."""
        now = self.steps
        safe = self.warmup_tests.safe_lr(self.record, first_step)
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
        self.plan.restart(step, peak)
        event = {"step": step, "event": "rescue", "reason": reason}
        event.update(lr_before=lr_before, peak_lr=peak, loss=to_json(loss))
        self._events.add(event)
        text = messages.rescue_warning(event)
        warnings.warn(text, RuntimeWarning, stacklevel=5)

    def _switch(
        self, reason: str, step: int, peak_lr: float | None = None
    ) -> None:
        """Ends warmup at `step`, from `peak_lr` (`None`: the cap, where the
        plan already ends it)."""
        if peak_lr is not None:
            self.plan.switch(step, peak_lr)
        event = {"step": step, "event": "switch", "reason": reason}
        event.update(
            lr_before=float(self.lr_at(step - 1)),
            peak_lr=self.plan.peak_lr,
            minimum_lr=self.warmup_tests.minimum_lr,
        )
        self._events.add(event)
