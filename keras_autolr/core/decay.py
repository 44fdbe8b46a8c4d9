"""The guards of the decay: when a loss that blows up restarts it.

Pure functions of the recorded losses and the schedule's decisions; the
controller acts on what they return (a restart at half the LR, a rescue).
"""

from __future__ import annotations

import numpy as np

from keras_autolr.core import losses as stats
from keras_autolr.core.losses import LossRecord
from keras_autolr.core.schedule import Decisions

# The decay's guard looks at the median of at least this many bins.
_BLOW_UP_BINS = 8


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
    progress = stats.progress(means)
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
    progress = stats.progress(means)
    after = np.isfinite(means) & (centers > start)
    return bool(
        progress is not None
        and np.any(after)
        and not progress.lost(np.min(means[after]))
    )


def blew_up_in_decay(
    record: LossRecord,
    decisions: Decisions,
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
    start = decisions.decay_start
    if now >= total_steps or now < start + wait:
        return False  # Nothing left to rescue, or too soon after the last.
    centers, means, _ = record.bins()
    # The bins since the last test point, and at least the last 8.
    window = max(check_every, _BLOW_UP_BINS * record.bin_width)
    since = max(now - window, start)
    return blew_up(centers, means, start, since, bool(decisions.restarts))


def restart_after_non_finite(
    record: LossRecord, decisions: Decisions, total_steps: int
) -> bool:
    """During decay: whether a non-finite loss restarts the decay (once,
    unless the loss recovered since the last restart)."""
    if record.steps >= total_steps:
        return False
    if not decisions.restarts:
        return True
    centers, means, _ = record.bins()
    return recovered(centers, means, decisions.decay_start)
