"""The tests of warmup: when they run, what they find, what that decides.

At every test point `minimum_test` (the loss statistics and the Gaussian-
process test, a pure function of a copy of the bins) is handed to a worker
thread; its answer is acted on at the next test point, `check_every` steps
later (or at the cap, if that comes first). The fixed delay makes every
decision the same whether the worker is fast or slow, and in every process.
The test at the cap acts at once, since nothing comes after it. With
`act_at_once` (the AutoWU reference's setting) every test is waited for and
acts at the step where it ran: decisions are just as deterministic, and
training waits for each test.

`WarmupTests` answers the controller with a `Verdict`; only the controller
changes the schedule's decisions.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from keras_autolr.core import losses as stats
from keras_autolr.core.gp import MinimumDetector
from keras_autolr.core.losses import LossRecord
from keras_autolr.core.schedule import SCALAR, Shape

# Warmup ends once the LR of the last step run is this many times the LR
# at the smoothed loss minimum, and the loss has stopped falling.
MAX_OVERSHOOT = 3.0
# A rise of more than this many noise std above the loss's lowest level,
# as `losses.rise` measures it, is clear: the same margin as a clear fall.
CLEAR_RISE = 8.0
# No explosion counts before the record holds this many finite bins: the
# 8 that set the starting level (`losses.progress`) and as many again;
# before that a smooth first fall leaves the noise estimate near zero.
_EXPLOSION_BINS = 16


@dataclasses.dataclass(frozen=True)
class TestOutcome:
    """What one test found in the losses recorded up to step `now`."""

    __test__ = False  # Not a pytest test class.

    now: int
    ran: bool = False  # The GP ran (the loss had clearly fallen, or last
    # test before the cap).
    exploded: bool = False  # The loss is back at its starting level.
    votes: bool = False  # The GP and the losses agree: past the minimum.
    rise: float = 0.0  # Recent losses above their lowest, in noise std.
    probabilities: tuple[float, ...] = ()
    minimum_x: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        state = dataclasses.asdict(self)
        state["probabilities"] = list(self.probabilities)
        state["minimum_x"] = list(self.minimum_x)
        return state

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> TestOutcome:
        return cls(
            **{
                **state,
                "probabilities": tuple(state["probabilities"]),
                "minimum_x": tuple(state["minimum_x"]),
            }
        )


def minimum_test(
    detector: MinimumDetector,
    centers: np.ndarray,
    raw: np.ndarray,
    counts: np.ndarray,
    now: int,
    check_every: int,
    at_cap: bool,
    key: int,
    filters: bool = True,
) -> TestOutcome:
    """The statistics and GP test of one test point: a pure function of
    the bins (`centers`, raw means `raw`, `counts`) up to step `now`.

    With `filters=False` the GP's majority vote alone decides, as in the
    AutoWU reference: the GP sees the raw means with one noise level, runs
    at every test, and neither the fall, the rise nor the explosion rule
    applies (`gp_inputs`).
    """
    if not filters:
        detection = detector.test(centers / now, raw, counts, key=key)
        return TestOutcome(
            now=now,
            ran=True,
            votes=bool(detection.past_minimum),
            probabilities=tuple(float(p) for p in detection.probabilities),
            minimum_x=tuple(float(x) for x in detection.minimum_x),
        )
    means, noise, variance = stats.detector_inputs(raw)
    # A minimum only counts once the loss has clearly fallen, or clearly
    # risen (a best LR near the ramp's start: the loss barely falls): a
    # bump or noise on the initial plateau is not the minimum of the LR
    # curve.
    progress = stats.progress(means)
    fell_clearly = progress is not None and progress.fell_clearly
    rose = 0.0 if fell_clearly else stats.rise(means, noise)
    rose_clearly = rose > CLEAR_RISE
    if not (fell_clearly or rose_clearly or at_cap):
        # Nothing the GP says can count before then; it runs from then on
        # (not only after a rise: the Keras side keeps weights once the GP
        # sees the minimum coming), and at the last test before the cap,
        # whose smoothed minimum sets the LR that warmup ends at there.
        return TestOutcome(now=now)
    recent = np.isfinite(means) & (centers > now - check_every)
    exploded = (
        fell_clearly
        and np.count_nonzero(np.isfinite(means)) >= _EXPLOSION_BINS
        and np.any(recent)
        and (
            progress.lost(np.average(means[recent], weights=counts[recent]))
            # Two bins in a row at the start level are no spike: the
            # filter would hold them back until the rise moves its
            # medians, while the LR grows further past the cliff.
            or all(progress.lost(v) for v in raw[np.isfinite(raw)][-2:])
        )
    )
    # The GP's verdict counts only if the recorded losses agree that the
    # loss has risen (more than 2 noise std, see `stats.rise`): near
    # "now" its posterior mean reverts towards the mean of the whole record
    # (the high plateau), and after a steep fall it rings below the knee,
    # both of which can pass for a minimum behind us.
    if fell_clearly:
        rise = stats.rise(means, noise)
    else:
        rise = rose if rose_clearly else 0.0
    detection = detector.test(
        centers / now, means, counts, key=key, noise=variance
    )
    return TestOutcome(
        now=now,
        ran=True,
        exploded=bool(exploded),
        votes=bool(detection.past_minimum and rise > 2.0),
        rise=float(rise),
        probabilities=tuple(float(p) for p in detection.probabilities),
        minimum_x=tuple(float(x) for x in detection.minimum_x),
    )


def gp_inputs(
    raw: np.ndarray, filters: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """The bin means and relative noise variances that a test gives the GP
    (`minimum_test`): despiked, with the noise of each bin, or with
    `filters=False` the raw means with one noise level (`None`)."""
    if not filters:
        return raw, None
    means, _, variance = stats.detector_inputs(raw)
    return means, variance


class Verdict(NamedTuple):
    """What a test decided: end warmup at `step` for `reason`, landing at
    `landing_lr`; or, with `reason` `None`, go on with `landing_lr` as the
    provisional landing LR (where warmup ends if the cap comes first)."""

    reason: str | None  # "minimum", "explosion", "overshoot" or None.
    landing_lr: float
    step: int


class WarmupTests:
    """Runs the tests of warmup and acts on their answers.

    Args:
        detector: the GP test.
        shape: the schedule's ramp, decay and budget.
        cap: the warmup cap, in steps.
        check_every: steps between two test points.
        patience: consecutive positive tests that end warmup.
        min_bins: no test before this many finite bins.
        background: run the tests on the background worker.
        act_at_once: wait for each test and act on it at the step where it
            ran, rather than one test later. Defaults to `False`.
        filters: the package's filters on top of the GP vote
            (`minimum_test`). Defaults to `True`.
        landing: warmup that ends with the loss rising gradually (the
            tests' vote, the overshoot bound or the cap) lands at this
            fraction of the LR at the smoothed minimum. Defaults to `0.5`.
    """

    def __init__(
        self,
        detector: MinimumDetector,
        shape: Shape,
        cap: int,
        check_every: int,
        patience: int,
        min_bins: int,
        background: bool,
        act_at_once: bool = False,
        filters: bool = True,
        landing: float = 0.5,
    ) -> None:
        self.detector = detector
        self.shape = shape
        self.cap = cap
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
        # one: its `result()` is a `TestOutcome`.
        self._pending: Any = None

    def drop_pending(self) -> None:
        """Forgets the test in flight (warmup ended another way)."""
        self._pending = None

    def at_test_point(
        self, record: LossRecord, end: int, test_due: bool, known: bool
    ) -> list[Verdict]:
        """After the chunk that ends at step `end`: acts on the previous
        test if its answer is due, then starts a test if one is due and the
        chunk's loss is `known`. Returns what the tests acted on decided,
        in order (at most two; one that ends warmup is the last).
        """
        cap = self.cap
        verdicts = []
        if self._pending is not None and (test_due or end >= cap):
            pending, self._pending = self._pending, None
            verdicts += self._act_on(pending.result(), min(end, cap))
            if verdicts and verdicts[-1].reason is not None:
                return verdicts
        if not (known and test_due and end <= cap):
            return verdicts
        centers, means, counts = record.bins()
        if np.count_nonzero(np.isfinite(means)) < self.min_bins:
            return verdicts
        now = record.closed_steps
        job = submit(
            minimum_test,
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
            verdicts += self._act_on(job.result(), end)
        else:
            self._pending = job
        return verdicts

    def _act_on(self, outcome: TestOutcome, effective: int) -> list[Verdict]:
        """Acts on a test from step `effective`."""
        if not outcome.ran or not outcome.probabilities:
            # The GP did not run, or found no point with a finite loss and
            # noise: nothing was tested.
            self._consecutive = 0
            if not outcome.ran:
                self.last_probability = None
            return []
        self.detector_runs += 1
        self.last_probability = float(np.mean(outcome.probabilities))
        self._consecutive = self._consecutive + 1 if outcome.votes else 0
        ramp = self.shape.warmup_lr
        lrs = ramp(np.asarray(outcome.minimum_x) * outcome.now)
        # A minimum at "now" maps to the LR of the step not yet run: cap it
        # at the LR of the last step run.
        last = ramp(float(outcome.now - 1), xp=SCALAR)
        self.minimum_lr = float(np.mean(np.minimum(lrs, last)))
        landing = self.landing * self.minimum_lr
        if self._consecutive >= self.patience:
            return [Verdict("minimum", landing, effective)]
        if outcome.exploded:
            # The loss climbed back to its starting level (an explosion, or
            # a network that died at chance): waiting for `patience` tests
            # would let the LR grow further into that regime. Land at most
            # at half the LR of the last step run: when the loss was still
            # falling right up to the cliff, the smoothed minimum sits at
            # its edge and is no safe LR.
            return [
                Verdict(
                    "explosion", min(self.minimum_lr, 0.5 * last), effective
                )
            ]
        if outcome.rise > 0.0 and last > MAX_OVERSHOOT * self.minimum_lr:
            # The loss has stopped falling and the smoothed minimum lies
            # behind, at an LR the ramp has since multiplied: however slowly
            # and noisily the loss rises, more warmup only goes further
            # past the LR it was best at.
            return [Verdict("overshoot", landing, effective)]
        # Provisional: if the cap comes first, warmup ends at the LR of the
        # smoothed minimum rather than at the overshoot.
        return [Verdict(None, landing, effective)]

    def safe_lr(self, record: LossRecord, first_step: int) -> float:
        """The LR to land at when the loss of the chunk from `first_step`
        was not finite: the LR at the smoothed minimum of the latest test
        (before any test, at the lowest recorded loss), and at most half
        the LR of the last step with a finite loss."""
        ramp = self.shape.warmup_lr
        good = ramp(float(first_step - 1), xp=SCALAR) if first_step else None
        safe = 0.5 * (self.shape.min_lr if good is None else good)
        lowest = self.minimum_lr
        if lowest is None:
            centers, means, _ = record.bins()
            finite = np.isfinite(means)
            if np.any(finite):
                best = centers[finite][int(np.argmin(means[finite]))]
                lowest = float(ramp(float(best), xp=SCALAR))
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
            else completed(TestOutcome.from_json(pending))
        )


# The worker thread that runs the tests off the training thread.

_LOCK = threading.Lock()
_EXECUTOR: list[Any] = [None, None]  # [executor, pid that made it]


class _Done:
    """A result computed on the calling thread, with a `Future`'s
    `result()`."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


def completed(value: Any) -> _Done:
    """A result known already, e.g. read back from a saved state."""
    return _Done(value)


def submit(fn: Callable[..., Any], *args: Any, background: bool = True):
    """Runs `fn(*args)` on the worker thread, or now if not `background`.

    Returns:
        An object whose `result()` returns `fn(*args)` (waiting for it if
        needed) or raises what it raised.
    """
    if not background:
        return _Done(fn(*args))
    return _executor().submit(fn, *args)


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process's worker, made again in a forked child (whose copy of
    the parent's executor has no thread behind it)."""
    with _LOCK:
        executor, pid = _EXECUTOR
        if executor is None or pid != os.getpid():
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="autolr-test"
            )
            _EXECUTOR[:] = [executor, os.getpid()]
        return executor
