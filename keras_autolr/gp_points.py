"""The points that a GP test of the loss minimum is fitted to.

The finite (time, loss) points of the recorded bins, standardised, each
with its relative noise variance (the bin's local noise over its count),
and the seeded subsampling of them that each posterior is conditioned on.
Shared by the NumPy and the TensorFlow Probability detectors.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Points:
    """The finite points of a test, standardised: `y = (loss - mean) /
    std`, with the relative noise variance of each."""

    x: np.ndarray
    y: np.ndarray
    noise: np.ndarray  # Relative noise variance of each point (mean 1).
    center: float
    std: float

    @property
    def size(self) -> int:
        return int(self.x.size)

    @classmethod
    def make(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        counts: np.ndarray | None,
        noise: np.ndarray | None = None,
    ) -> Points | None:
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        counts = _ones_or(counts, y)
        noise = _ones_or(noise, y)
        if not x.shape == y.shape == counts.shape == noise.shape:
            raise ValueError(
                "`x`, `y`, `counts` and `noise` must have the same length. "
                f"Received: {x.size}, {y.size}, {counts.size} and "
                f"{noise.size} values."
            )
        keep = (
            np.isfinite(x)
            & np.isfinite(y)
            & (counts > 0)
            & np.isfinite(noise)
            & (noise > 0)
        )
        if np.count_nonzero(keep) < 3:
            return None
        x, y, counts, noise = x[keep], y[keep], counts[keep], noise[keep]
        center = float(np.mean(y))
        std = float(np.std(y))
        if not std > 0.0 or not np.isfinite(std):
            std = 1.0  # Constant losses: nothing to detect, keep it finite.
        relative = noise / counts
        # Scaled by the largest first: a mean of huge variances overflows.
        relative /= np.max(relative)
        relative /= np.mean(relative)
        return cls(x, (y - center) / std, relative, center, std)

    def take(self, idx: np.ndarray) -> Points:
        return Points(
            self.x[idx], self.y[idx], self.noise[idx], self.center, self.std
        )


def _ones_or(values: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    if values is None:
        return np.ones_like(like)
    return np.asarray(values, dtype=np.float64).ravel()


def subsample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """`min(n, k)` sorted indices drawn uniformly without replacement."""
    if n <= k:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))
