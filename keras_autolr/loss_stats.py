"""Statistics of the recorded loss curve, as pure NumPy functions.

A training loss is noisy, and its noise is not constant: on the plateau at
the start it is a fraction of what it is where the loss falls fast or near
the cliff. These functions measure that noise locally, filter single bad
batches out, and say how far the loss has fallen and risen. They take the
bin means of a `LossRecord` and know nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import numpy as np


def detector_inputs(
    means: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The bin means as the test sees them, and the noise of each bin.

    The loss is far noisier where it falls fast, or near the cliff, than on
    the initial plateau: each bin gets the noise of its own neighbourhood
    (`local_noise`), in the spike filter and in the test. One bad batch is
    neither a minimum nor an explosion (`despike`).

    Returns:
        `(despiked means, noise std of each bin, relative noise variances
        for the detector)`; the variances are `None` (the same noise everywhere)
        when a record of exactly repeated losses has no noise to compare.
    """
    noise = local_noise(means)
    finite = noise[np.isfinite(noise)]
    variance = None
    if finite.size and np.all(finite > 0):
        # Relative variances are all the detector needs; relative to the
        # largest, they cannot overflow.
        variance = (noise / np.max(finite)) ** 2
    return despike(means, scale=noise), noise, variance


def despike(
    means: np.ndarray, half_window: int = 3, scale: np.ndarray | None = None
) -> np.ndarray:
    """Replaces isolated outliers by what their neighbourhood predicts.

    A Hampel filter: a bin further than 5 robust standard deviations from
    the median of the `2 * half_window + 1` bins centred on it is replaced
    by that median. The standard deviation is `scale`, one per bin
    (`local_noise(means)` if not given). The last `half_window` bins have
    no right neighbours: each is compared with a robust linear
    extrapolation of the bins before it (median level plus median slope),
    so that a steady trend at the end is not mistaken for an outlier. One
    bad batch is not a loss minimum, but a rise that lasts several bins
    moves the medians with it and is kept.
    Non-finite values pass through (the detector leaves them out).
    """
    n = means.size
    width = 2 * half_window + 1
    if n < width + half_window:
        return means
    if scale is None:
        scale = local_noise(means)
    if not np.any(scale > 0):
        return means
    expected = np.full(n, np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(means, width)
    # NumPy's nanmedian is ~10x slower than median: only where needed.
    if np.isfinite(means).all():
        median = _median
    else:
        median = functools.partial(np.nanmedian, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN windows.
        expected[half_window : n - half_window] = median(windows)
        for i in range(n - half_window, n):
            before = means[i - width : i]
            slope = median(np.diff(before))
            expected[i] = median(before) + slope * (half_window + 1)
    spikes = np.abs(means - expected) > 5.0 * scale  # False where NaN.
    return np.where(spikes, expected, means)


def local_noise(means: np.ndarray, half_window: int = 8) -> np.ndarray:
    """Robust std of each bin, from the bins around it.

    `bin_noise` of the `2 * half_window` successive differences nearest to
    each bin (a window of fixed size, shifted inwards at both ends). The
    noise of a training loss is not constant: on the plateau at the start
    it is a fraction of what it is where the loss falls fast or where the
    LR nears the cliff, and a single figure for the whole record makes
    every ordinary wobble of the noisy stretches look significant. At
    least a quarter of the noise of the whole record, so that a window of
    nearly equal losses cannot claim near-certainty. Non-finite bins are
    left out of the differences and get NaN; a record of exactly repeated
    losses gets 0 everywhere.
    """
    out = np.full(means.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(means))
    level = means[finite]
    overall = bin_noise(level)
    width = 2 * half_window
    if level.size < width + 1:
        out[finite] = overall
        return out
    diffs = np.diff(level)
    windows = np.lib.stride_tricks.sliding_window_view(diffs, width)
    centre = _median(windows)[:, None]
    mad = _median(np.abs(windows - centre))
    local = 1.4826 * mad / np.sqrt(2)
    # Bin i (of level) takes the window of differences starting at i - h,
    # shifted to stay inside.
    start = np.clip(np.arange(level.size) - half_window, 0, local.size - 1)
    floor = 0.25 * (overall if overall > 0 else np.max(local))
    out[finite] = np.maximum(local[start], floor)
    return out


def rise(means: np.ndarray, noise: np.ndarray, window: int = 8) -> float:
    """How far the loss now is above its lowest level, in noise std.

    The median of the last `window` finite bins minus the lowest median of
    `window` consecutive finite bins, over the local noise std of the last
    bin; 0 while the latest median is the lowest (the loss still falls),
    or with at most `window` finite bins. A vote needs more than 2: a
    median of 8 has a standard deviation of about 0.44 of a bin's, and the
    lowest of many running medians is itself a low draw (at 1, a long flat
    stretch passed for a rise about one test in four).
    """
    finite = np.isfinite(means)
    level = means[finite]
    if level.size < window + 1:
        return 0.0
    running = running_medians(level, window)
    excess = float(running[-1] - np.min(running))
    if excess <= 0.0:
        return 0.0
    scale = float(noise[finite][-1])
    return excess / scale if scale > 0.0 else math.inf


def running_medians(level: np.ndarray, window: int) -> np.ndarray:
    """Medians of every `window` consecutive values."""
    windows = np.lib.stride_tricks.sliding_window_view(level, window)
    return _median(windows)


def _median(values: np.ndarray) -> Any:
    """`np.median` over the last axis, for finite values only.

    A sort and two picks: 2 to 40 times faster than NumPy's general median
    on the short arrays and narrow windows of a test, where NumPy's
    overhead is most of the cost.
    """
    ordered = np.sort(values, axis=-1)
    n = ordered.shape[-1]
    return 0.5 * (ordered[..., (n - 1) // 2] + ordered[..., n // 2])


def bin_noise(level: np.ndarray) -> float:
    """Robust std of one bin: MAD of successive differences, over sqrt 2.

    Differences cancel a smooth trend, which a median filter's residuals
    would not measure (they are exactly 0 on a monotone stretch).
    """
    if level.size < 3:
        return 0.0
    diffs = np.diff(level)
    mad = _median(np.abs(diffs - _median(diffs)))
    return float(1.4826 * mad / np.sqrt(2))


@dataclasses.dataclass(frozen=True, eq=False)
class Progress:
    """How far warmup has brought the recorded loss (compared by identity:
    it holds an array)."""

    start: float  # Median of the first 8 finite bins.
    lowest: float  # Lowest bin.
    level: np.ndarray  # The finite bins.

    @functools.cached_property
    def noise(self) -> float:
        """Robust std of one bin, `bin_noise`: computed only when asked (the
        decay guard rarely needs it)."""
        return bin_noise(self.level)

    @property
    def fell_clearly(self) -> bool:
        """The loss fell by more than 8 noise standard deviations."""
        return self.start - self.lowest > 8.0 * self.noise

    def lost(self, current: float, fraction: float = 0.9) -> bool:
        """`current` is back `fraction` of the way up to the start."""
        return current >= self.lowest + fraction * (self.start - self.lowest)


def progress(means: np.ndarray) -> Progress | None:
    """The `Progress` of the bin means `means`; `None` with fewer than 8
    finite bins."""
    level = means[np.isfinite(means)]
    if level.size < 8:
        return None
    return Progress(
        float(_median(level[:8])),
        float(np.min(level)),
        level,
    )


def at_lowest_loss(means: np.ndarray, window: int = 8) -> bool:
    """Whether the loss of the bin means `means` is now within noise of its
    lowest level.

    Compares running medians over `window` finite bins: the latest is at
    most two noise standard deviations of a single bin above the lowest
    (the lowest of many running medians is itself a low draw). Medians, not
    single bins or means: the lowest single bin of a long, noisy record is
    an outlier that later losses rarely reach. A median also lags a sudden
    rise by half its window, so the latest bin itself must be within three
    noise standard deviations too: weights that have just started to blow
    up are not worth keeping.
    """
    if not means.size or not np.isfinite(means[-1]):
        return False
    finite = means[np.isfinite(means)]
    running = running_medians(finite, min(window, finite.size))
    lowest, noise = np.min(running), bin_noise(finite)
    return bool(
        running[-1] <= lowest + 2.0 * noise
        and means[-1] <= lowest + 3.0 * noise
    )
