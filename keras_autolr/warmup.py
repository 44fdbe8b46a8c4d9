"""The tests of warmup: when they run, and what their answers decide.

At every test point a `decisions.minimum_test` of the losses recorded so far
is handed to the background worker; its answer is acted on at the next test
point, `check_every` steps later (or at the cap, if that comes first). The
fixed delay makes every decision the same whether the worker is fast or
slow, and in every process. The test at the cap acts at once, since nothing
comes after it. With `act_at_once` (the AutoWU reference's setting) every
test is waited for and acts at the step where it ran: decisions are just as
deterministic, and training waits for each test.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from keras_autolr import background, decisions, schedules
from keras_autolr.detector import MinimumDetector
from keras_autolr.loss_record import LossRecord
from keras_autolr.plan import Plan

# Warmup ends once the LR of the last step run is this many times the LR
# at the smoothed loss minimum, and the loss has stopped falling.
MAX_OVERSHOOT = 3.0


class Switch(NamedTuple):
    """A decision to end warmup at `step`, decaying from `peak_lr`."""

    reason: str  # "minimum", "explosion" or "overshoot".
    peak_lr: float
    step: int


class WarmupTests:
    """Runs the tests of warmup and acts on their answers.

    Args:
        detector: the GP test.
        plan: the schedule's decisions; a test that does not end warmup
            moves its provisional peak LR.
        check_every: steps between two test points.
        patience: consecutive positive tests that end warmup.
        min_bins: no test before this many finite bins.
        background: run the tests on the background worker.
        act_at_once: wait for each test and act on it at the step where it
            ran, rather than one test later. Defaults to `False`.
        filters: the package's filters on top of the GP vote
            (`decisions.minimum_test`). Defaults to `True`.
        landing: warmup that ends with the loss rising gradually (the
            tests' vote, the overshoot bound or the cap) lands at this
            fraction of the LR at the smoothed minimum. Defaults to `0.5`.
    """

    def __init__(
        self,
        detector: MinimumDetector,
        plan: Plan,
        check_every: int,
        patience: int,
        min_bins: int,
        background: bool,
        act_at_once: bool = False,
        filters: bool = True,
        landing: float = 0.5,
    ) -> None:
        self.detector = detector
        self.plan = plan
        self.check_every = check_every
        self.patience = patience
        self.min_bins = min_bins
        self.background = background
        self.act_at_once = act_at_once
        self.filters = filters
        self.landing = landing
        self.reset()

    def reset(self) -> None:
        self.minimum_lr: float | None = None  # At the smoothed minimum.
        self.tests_run = 0
        self.detector_runs = 0
        self.last_probability: float | None = None
        self._consecutive = 0
        # The test started at the last test point, acted on at the next
        # one: its `result()` is a `decisions.TestOutcome`.
        self._pending: Any = None

    def drop_pending(self) -> None:
        """Forgets the test in flight (warmup ended another way)."""
        self._pending = None

    def at_test_point(
        self, record: LossRecord, end: int, test_due: bool, known: bool
    ) -> Switch | None:
        """After the chunk that ends at step `end`: acts on the previous
        test if its answer is due, then starts a test if one is due and the
        chunk's loss is `known`. Returns the switch a test decided, if any.
        """
        cap = self.plan.switch_step
        if self._pending is not None and (test_due or end >= cap):
            pending, self._pending = self._pending, None
            switch = self._act_on(pending.result(), min(end, cap))
            if switch is not None:
                return switch
        if not (known and test_due and end <= cap):
            return None
        centers, means, counts = record.bins()
        if np.count_nonzero(np.isfinite(means)) < self.min_bins:
            return None
        now = record.closed_steps
        job = background.submit(
            decisions.minimum_test,
            self.detector,
            centers,
            means,
            counts,
            now,
            self.check_every,
            # The last test to act before the cap: its smoothed minimum
            # sets the LR that warmup ends at there.
            now + self.check_every > cap,
            self.tests_run,
            self.filters,
            # A test waited for gains nothing from the worker thread.
            background=self.background and not self.act_at_once,
        )
        self.tests_run += 1
        if end == cap or self.act_at_once:
            return self._act_on(job.result(), end)
        self._pending = job
        return None

    def _act_on(
        self, outcome: decisions.TestOutcome, effective: int
    ) -> Switch | None:
        """Acts on a test from step `effective`."""
        if not outcome.ran or not outcome.probabilities:
            # The GP did not run, or found no point with a finite loss and
            # noise: nothing was tested.
            self._consecutive = 0
            if not outcome.ran:
                self.last_probability = None
            return None
        self.detector_runs += 1
        self.last_probability = float(np.mean(outcome.probabilities))
        self._consecutive = self._consecutive + 1 if outcome.votes else 0
        ramp = self.plan.shape.warmup_lr
        lrs = ramp(np.asarray(outcome.minimum_x) * outcome.now)
        # A minimum at "now" maps to the LR of the step not yet run: cap it
        # at the LR of the last step run.
        last = ramp(float(outcome.now - 1), xp=schedules.SCALAR)
        self.minimum_lr = float(np.mean(np.minimum(lrs, last)))
        landing = self.landing * self.minimum_lr
        if self._consecutive >= self.patience:
            return Switch("minimum", landing, effective)
        if outcome.exploded:
            # The loss climbed back to its starting level (an explosion, or
            # a network that died at chance): waiting for `patience` tests
            # would let the LR grow further into that regime. Land at most
            # at half the LR of the last step run: when the loss was still
            # falling right up to the cliff, the smoothed minimum sits at
            # its edge and is no safe LR.
            return Switch(
                "explosion", min(self.minimum_lr, 0.5 * last), effective
            )
        if outcome.rise > 0.0 and last > MAX_OVERSHOOT * self.minimum_lr:
            # The loss has stopped falling and the smoothed minimum lies
            # behind, at an LR the ramp has since multiplied: however slowly
            # and noisily the loss rises, more warmup only goes further
            # past the LR it was best at (`benchmarks/README.md`: the
            # overshoot of the suite).
            return Switch("overshoot", landing, effective)
        # Provisional: if the cap comes first, warmup ends at the LR of the
        # smoothed minimum rather than at the overshoot.
        self.plan.set_peak(landing)
        return None

    def safe_lr(self, record: LossRecord, first_step: int) -> float:
        """The LR to land at when the loss of the chunk from `first_step`
        was not finite: the LR at the smoothed minimum of the latest test
        (before any test, at the lowest recorded loss), and at most half
        the LR of the last step with a finite loss."""
        plan = self.plan
        good = float(plan.lr_at(first_step - 1)) if first_step else None
        safe = 0.5 * (plan.shape.min_lr if good is None else good)
        lowest = self.minimum_lr
        if lowest is None:
            centers, means, _ = record.bins()
            finite = np.isfinite(means)
            if np.any(finite):
                best = centers[finite][int(np.argmin(means[finite]))]
                lowest = float(plan.lr_at(best))
        return safe if lowest is None else min(safe, lowest)

    def get_state(self) -> dict[str, Any]:
        """JSON-compatible; waits for a test in flight and stores its
        answer."""
        pending = self._pending
        return {
            "minimum_lr": self.minimum_lr,
            "tests_run": self.tests_run,
            "detector_runs": self.detector_runs,
            "last_probability": self.last_probability,
            "consecutive": self._consecutive,
            "pending": None if pending is None else pending.result().to_json(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.minimum_lr = state["minimum_lr"]
        self.tests_run = int(state["tests_run"])
        self.detector_runs = int(state["detector_runs"])
        self.last_probability = state["last_probability"]
        self._consecutive = int(state["consecutive"])
        pending = state["pending"]
        self._pending = (
            None
            if pending is None
            else background.completed(decisions.TestOutcome.from_json(pending))
        )
