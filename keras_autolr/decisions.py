"""The decisions of AutoLR, as pure functions of the recorded losses.

`minimum_test` is one test point of warmup: the loss statistics and the
Gaussian-process test, run on a copy of the bins (off the training thread,
see `keras_autolr.background`). `blew_up_in_decay` and
`restart_after_non_finite` guard the decay. None of them holds state: the
controller owns the state and acts on what they return.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from keras_autolr import loss_stats
from keras_autolr.detector import MinimumDetector
from keras_autolr.loss_record import LossRecord
from keras_autolr.plan import Plan

# The decay's guard looks at the median of at least this many bins.
_BLOW_UP_BINS = 8
# No explosion counts before the record holds this many finite bins: the
# 8 that set the starting level (`loss_stats.progress`) and as many again.
# Before that, a smooth first fall gives a noise estimate near zero and a
# starting level that is still falling, so one noisy batch "fell clearly"
# and "came back": the suite's BatchNorm CNN at batch 32 ended warmup that
# way at step 18 of 2,250.
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
    means, noise, variance = loss_stats.detector_inputs(raw)
    # A minimum only counts once the loss has clearly fallen: a bump or
    # noise on the initial plateau is not the minimum of the LR curve.
    progress = loss_stats.progress(means)
    fell_clearly = progress is not None and progress.fell_clearly
    if not (fell_clearly or at_cap):
        # Nothing the GP says can count before the loss has clearly
        # fallen. The GP is most of a test's cost: it runs from then on,
        # and at the last test before the cap, whose smoothed minimum sets
        # the LR that warmup ends at there. (Not only where the loss has
        # risen above its lowest: the Keras adapter keeps weights at every
        # test once the GP sees the minimum coming, and those copies are
        # what a rollback restores. In the quality benchmark, running the
        # GP only after a rise gave the same 12 switch decisions but lost
        # 0.5 and 0.15 points in 2 runs for older copies.)
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
    # loss has risen (more than 2 noise std, see `loss_stats.rise`): near
    # "now" its posterior mean reverts towards the mean of the whole record
    # (the high plateau), and after a steep fall it rings below the knee,
    # both of which can pass for a minimum behind us.
    rise = loss_stats.rise(means, noise) if fell_clearly else 0.0
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
    means, _, variance = loss_stats.detector_inputs(raw)
    return means, variance


def blew_up(
    centers: np.ndarray,
    means: np.ndarray,
    start: int,
    since: int,
    restarted: bool,
) -> bool:
    """Whether the loss since step `since` is back at its starting level,
    after a clear fall (and, after a restart at step `start`, a recovery
    since). The level is the median of those bins: one bad batch (an
    outlier of the data, a short last batch of an epoch) is no blow-up.
    Cheapest condition first: the loss is rarely back up."""
    progress = loss_stats.progress(means)
    if progress is None:
        return False
    recent = means[np.isfinite(means) & (centers > since)]
    if not recent.size or not progress.lost(float(np.median(recent))):
        return False
    if restarted and not recovered(centers, means, start):
        return False
    return progress.fell_clearly


def recovered(centers: np.ndarray, means: np.ndarray, start: int) -> bool:
    """Whether the loss came back below its starting level after step
    `start` (the last restart)."""
    progress = loss_stats.progress(means)
    after = np.isfinite(means) & (centers > start)
    return bool(
        progress is not None
        and np.any(after)
        and not progress.lost(np.min(means[after]))
    )


def blew_up_in_decay(
    record: LossRecord,
    plan: Plan,
    total_steps: int,
    wait: int,
    check_every: int,
) -> bool:
    """During decay, at a test point: whether the loss blew up, so that the
    decay restarts at half the LR.

    A loss back at its starting level (the median of the bins since the
    last test point, and of at least the last 8, 90 % of the way up from
    its lowest, as in warmup: a network that died) means the LR is too
    high for the long run even though the warmup's loss curve tolerated
    it. One outlying batch is not a blow-up. A smaller
    rise is left alone: right after the switch a short rise is common and
    passes. Unlike a warmup test, this check runs on the training thread
    and acts at once: it stops at the first condition that fails, and the
    first (is the loss back up?) is a few comparisons.

    One blow-up, one restart: a restart waits `wait` steps after the switch
    or the previous restart (a rise must last), and after a restart a
    blow-up counts again only once the loss has come back below the
    starting level in between. A network that stays dead is not helped by
    halving the LR every step.
    """
    now = record.steps
    start = plan.decay_start
    if now >= total_steps or now < start + wait:
        return False  # Nothing left to rescue, or too soon after the last.
    centers, means, _ = record.bins()
    # The bins since the last test point, and at least the last 8.
    window = max(check_every, _BLOW_UP_BINS * record.bin_width)
    since = max(now - window, start)
    return blew_up(centers, means, start, since, bool(plan.restarts))


def restart_after_non_finite(
    record: LossRecord, plan: Plan, total_steps: int
) -> bool:
    """During decay: whether a non-finite loss restarts the decay (once,
    unless the loss recovered since the last restart)."""
    if record.steps >= total_steps:
        return False
    if not plan.restarts:
        return True
    centers, means, _ = record.bins()
    return recovered(centers, means, plan.decay_start)
