"""The recorded training losses and their statistics.

Losses arrive one step at a time, or as the mean of a chunk of steps. A
`LossRecord` sums them into bins of `bin_steps` steps; memory stays bounded
because at `max_bins` bins neighbours are merged pairwise (bins twice as
wide). A bin that covers a non-finite loss has a non-finite mean and is left
out of every test.

The functions below read the bin means. A training loss is noisy, and its
noise is not constant: on the plateau at the start it is a fraction of what
it is where the loss falls fast or near the cliff. They measure that noise
locally, filter single bad batches out, and say how far the loss has fallen
and risen.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import numpy as np


class LossRecord:
    """Per-step losses summed into bins of equal width.

    Args:
        bin_steps: width of a bin in steps, at the start.
        max_bins: at this many bins, neighbours are merged pairwise; even.
    """

    def __init__(self, bin_steps: int, max_bins: int) -> None:
        self.bin_steps = bin_steps
        self.max_bins = max_bins
        self.reset()

    def reset(self) -> None:
        """Forgets every loss."""
        self.steps = 0  # Steps recorded, the open bin included.
        self._width = self.bin_steps
        self._sums: list[float] = []
        self._counts: list[float] = []
        self._open_sum = 0.0
        self._open_count = 0.0
        self._bins = None

    @property
    def num_bins(self) -> int:
        """Closed bins."""
        return len(self._sums)

    @property
    def bin_width(self) -> int:
        """Steps per bin now (`bin_steps`, doubled at each merge)."""
        return self._width

    @property
    def closed_steps(self) -> int:
        """Steps covered by the closed bins: the step a test sees up to."""
        return len(self._sums) * self._width

    def add(self, loss: float, num_steps: int) -> int | None:
        """Records `num_steps` steps of mean loss `loss` (NaN: unknown).

        Returns:
            The step at which the last bin closed during this call, or
            `None` if none did.
        """
        end = self.steps + num_steps
        closed = None
        while self.steps < end:
            bin_end = (len(self._sums) + 1) * self._width
            take = min(end, bin_end) - self.steps
            self._open_sum += loss * take
            self._open_count += take
            self.steps += take
            if self.steps == bin_end:
                self._close_bin()
                closed = self.steps
        return closed

    def add_each(self, losses: np.ndarray) -> int | None:
        """Records one step per loss, in order; returns as `add` does."""
        closed = None
        for loss in losses:
            step = self.add(float(loss), 1)
            closed = closed if step is None else step
        return closed

    def _close_bin(self) -> None:
        self._bins = None
        self._sums.append(self._open_sum)
        self._counts.append(self._open_count)
        self._open_sum = 0.0
        self._open_count = 0.0
        if len(self._sums) == self.max_bins:
            # An even number of aligned bins: merge neighbours pairwise.
            self._sums = _pairwise_sum(self._sums)
            self._counts = _pairwise_sum(self._counts)
            self._width *= 2

    def bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The closed bins as `(center_step, mean_loss, num_steps)`:
        read-only arrays, computed again only once a bin closes (a test
        point reads them several times)."""
        if self._bins is None:
            sums = np.asarray(self._sums, dtype=np.float64)
            counts = np.asarray(self._counts, dtype=np.float64)
            centers = (np.arange(sums.size) + 0.5) * self._width
            with np.errstate(invalid="ignore", divide="ignore"):
                bins = (centers, sums / counts, counts)
            for array in bins:
                array.flags.writeable = False
            self._bins = bins
        return self._bins

    def get_state(self) -> dict[str, Any]:
        """The record as JSON-compatible values (non-finite as `None`)."""
        return {
            "steps": self.steps,
            "bin_width": self._width,
            "bin_sums": [to_json(v) for v in self._sums],
            "bin_counts": list(self._counts),
            "open_sum": to_json(self._open_sum),
            "open_count": self._open_count,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a `get_state()`."""
        self.steps = int(state["steps"])
        self._width = int(state["bin_width"])
        self._sums = [from_json(v) for v in state["bin_sums"]]
        self._counts = [float(v) for v in state["bin_counts"]]
        self._open_sum = from_json(state["open_sum"])
        self._open_count = float(state["open_count"])
        self._bins = None


def _pairwise_sum(values: list[float]) -> list[float]:
    return [a + b for a, b in zip(values[::2], values[1::2], strict=True)]


def to_json(value: float) -> float | None:
    """A float for JSON: `None` where it is not finite."""
    return value if math.isfinite(value) else None


def from_json(value: float | None) -> float:
    """The inverse of `to_json`: `None` is NaN."""
    return math.nan if value is None else float(value)


# Statistics of the bin means.


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

    A sort and two picks: on the short arrays and narrow windows of a test,
    NumPy's general median is mostly overhead.
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
