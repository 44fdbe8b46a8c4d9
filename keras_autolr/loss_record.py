"""The record of training losses that the tests read: bins of steps.

Losses arrive one step at a time, or as the mean of a chunk of steps. They
are summed into bins of `bin_steps` steps; memory stays bounded because at
`max_bins` bins neighbours are merged pairwise (bins twice as wide). A bin
that covers a non-finite loss has a non-finite mean and is left out of
every test.
"""

from __future__ import annotations

import math
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
