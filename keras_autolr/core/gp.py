"""The Gaussian-process test for "the training loss has passed its minimum".

Pure: floats in, a decision out. No Keras, no TensorFlow.

The model is the one of AutoWU (Kim et al., 2021): the recorded losses are
regressed against normalised time `x` in [0, 1] (`x = 1` is now) with a GP of
constant mean (the data mean), an RBF kernel of fixed length scale 0.2, and a
trainable output scale and noise. The test asks, for the noise-free latent
curve `f`, for `p = max_i P(f(x_i) < f(1))` over grid points before now: the
probability that some earlier point was lower than now, i.e. that the
minimum is behind us.

Why NumPy/SciPy and not TensorFlow Probability: with the length scale fixed,
the marginal likelihood has a closed form after a single eigendecomposition,
so the output scale and noise are fitted exactly (a 1-D profile-likelihood
search) instead of by 100 Adam iterations, at a fraction of the cost of
TFP's GP (`benchmarks/detector_cost.py`); TFP's TensorFlow substrate would
also need `tf-keras`, hence Keras 2. The tests check this implementation
against TFP's `GaussianProcessRegressionModel` (NumPy substrate), and
`smoother="tfp"` runs TFP's GP instead (`keras_autolr.core.smoothers`).

The points a test is fitted to (`Points`) are the finite (time, loss)
points of the recorded bins, standardised, each with its relative noise
variance (the bin's local noise over its count); each posterior is
conditioned on a seeded subsample of them (`subsample`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import linalg
from threadpoolctl import ThreadpoolController

from keras_autolr.core import checks as check

# A floor on the noise variance, relative to the variance of the data:
# keeps the Gram matrix well conditioned when the losses are nearly exact.
MIN_NOISE = 1e-6
# Candidate signal-to-noise ratios for the profile-likelihood search.
_LOG10_SNR_GRID = np.linspace(-4.0, 8.0, 97)


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


@dataclasses.dataclass(frozen=True)
class Posterior:
    """The GP posterior of the latent loss curve on a grid of `x` values.

    Attributes:
        x: grid of normalised times in [0, 1]; the last point is now.
        mean: posterior mean of the latent curve, in loss units.
        std: posterior standard deviation of the latent curve.
        past_minimum_probability: `max_i P(f(x_i) < f(1))` over grid points
            before now.
    """

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    past_minimum_probability: float

    @property
    def argmin_x(self) -> float:
        """Normalised time of the posterior-mean minimum."""
        return float(self.x[int(np.argmin(self.mean))])


@dataclasses.dataclass(frozen=True)
class Detection:
    """The outcome of one test.

    Attributes:
        past_minimum: whether a majority of the posteriors put the minimum
            behind now with probability above the confidence level.
        probabilities: one `p` per posterior.
        minimum_x: one normalised time of the posterior-mean minimum per
            posterior.
    """

    past_minimum: bool
    probabilities: tuple[float, ...]
    minimum_x: tuple[float, ...]


class MinimumDetector:
    """Decides whether a noisy loss curve has passed its minimum.

    Args:
        length_scale: RBF length scale in normalised time. Defaults to `0.2`.
        num_tests: number of posteriors, each conditioned on an independent
            random subsample, that vote. Defaults to `5`.
        confidence: a posterior votes "past minimum" when its `p` exceeds
            this. Defaults to `0.95`.
        max_fit_points: at most this many points (a random subsample) are
            used to fit the output scale and noise. Defaults to `100`.
        max_condition_points: at most this many points are used to condition
            each posterior. Defaults to `256`.
        grid_size: number of grid points over [0, 1]. Defaults to `128`.
        jitter: added to the variance of each difference `f(x_i) - f(1)`, in
            units of the data variance. Defaults to `1e-4`.
        seed: seed of all subsampling; together with the `key` of each call
            it makes every decision reproducible across processes.
            Defaults to `0`.

    Example:

    >>> x = np.linspace(0, 1, 200, endpoint=False)
    >>> y = (x - 0.5) ** 2 + 0.01 * np.random.default_rng(0).normal(size=200)
    >>> MinimumDetector().test(x, y).past_minimum
    True
    """

    def __init__(
        self,
        length_scale: float = 0.2,
        num_tests: int = 5,
        confidence: float = 0.95,
        max_fit_points: int = 100,
        max_condition_points: int = 256,
        grid_size: int = 128,
        jitter: float = 1e-4,
        seed: int = 0,
    ) -> None:
        check.check_float("length_scale", length_scale, 0.0, low_open=True)
        check.check_int("num_tests", num_tests, 1)
        check.check_float("confidence", confidence, 0.5, 1.0, high_open=True)
        check.check_int("max_fit_points", max_fit_points, 3)
        check.check_int("max_condition_points", max_condition_points, 3)
        check.check_int("grid_size", grid_size, 2)
        check.check_float("jitter", jitter, 0.0)
        check.check_int("seed", seed, 0)
        self.length_scale = float(length_scale)
        self.num_tests = int(num_tests)
        self.confidence = float(confidence)
        self.max_fit_points = int(max_fit_points)
        self.max_condition_points = int(max_condition_points)
        self.grid_size = int(grid_size)
        self.jitter = float(jitter)
        self.seed = int(seed)

    def get_config(self) -> dict:
        """The constructor arguments, for `MinimumDetector(**config)`."""
        return {
            "length_scale": self.length_scale,
            "num_tests": self.num_tests,
            "confidence": self.confidence,
            "max_fit_points": self.max_fit_points,
            "max_condition_points": self.max_condition_points,
            "grid_size": self.grid_size,
            "jitter": self.jitter,
            "seed": self.seed,
        }

    def test(
        self,
        x: np.ndarray,
        y: np.ndarray,
        counts: np.ndarray | None = None,
        key: int = 0,
        noise: np.ndarray | None = None,
    ) -> Detection:
        """Runs the test on losses `y` recorded at normalised times `x`.

        Args:
            x: normalised times in [0, 1], now being 1.
            y: losses; non-finite values are left out of the fit.
            counts: number of training steps averaged in each loss (chunk or
                bin means); a mean of `n` steps gets `1 / n` of the noise
                variance. Defaults to all ones.
            key: a non-negative integer mixed into the seed, e.g. the index
                of the check, so that successive checks draw fresh
                subsamples while any process repeats the same draws.
            noise: relative noise variance of each loss (any positive
                scale; e.g. the square of a local noise estimate), for
                losses that are noisier in some stretches than in others.
                Multiplies the `1 / counts` factor; points whose noise is
                not finite and positive are left out. Defaults to all
                ones: the same noise everywhere.

        Returns:
            A `Detection`.
        """
        data = Points.make(x, y, counts, noise)
        if data is None:
            return Detection(False, (), ())
        # One BLAS thread: these matrices are small, and a multi-threaded
        # BLAS competes with the training process for the same cores.
        with _blas().limit(limits=1, user_api="blas"):
            return self._test(data, key)

    def _fitted(self, data: Points, key: int):
        """The seeded generator of test `key`, and the output scale and
        noise fitted on its first subsample."""
        rng = np.random.default_rng([self.seed, int(key)])
        fit_idx = subsample(rng, data.size, self.max_fit_points)
        return (rng, *self._fit(data.take(fit_idx)))

    def _test(self, data: Points, key: int) -> Detection:
        rng, scale2, noise2 = self._fitted(data, key)
        posteriors = []
        whole = data.size <= self.max_condition_points
        for _ in range(1 if whole else self.num_tests):
            idx = subsample(rng, data.size, self.max_condition_points)
            posteriors.append(self._posterior(data.take(idx), scale2, noise2))
        if whole:  # Every subsample is the whole data: one posterior.
            posteriors *= self.num_tests
        probabilities = tuple(p.past_minimum_probability for p in posteriors)
        votes = sum(p > self.confidence for p in probabilities)
        return Detection(
            past_minimum=votes > self.num_tests / 2,
            probabilities=probabilities,
            minimum_x=tuple(p.argmin_x for p in posteriors),
        )

    def posterior(
        self,
        x: np.ndarray,
        y: np.ndarray,
        counts: np.ndarray | None = None,
        key: int = 0,
        noise: np.ndarray | None = None,
    ) -> Posterior | None:
        """The smoothed curve of one posterior, e.g. for plotting.

        Same arguments as `test`. Returns `None` with fewer than 3 finite
        losses.
        """
        data = Points.make(x, y, counts, noise)
        if data is None:
            return None
        rng, scale2, noise2 = self._fitted(data, key)
        idx = subsample(rng, data.size, self.max_condition_points)
        return self._posterior(data.take(idx), scale2, noise2)

    def fit_hyperparameters(
        self,
        x: np.ndarray,
        y: np.ndarray,
        counts: np.ndarray | None = None,
        noise: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """Maximum-likelihood output scale and noise variance on all points.

        Returns `(output_scale_variance, noise_variance)` in squared loss
        units, the noise being that of a point of mean relative noise.
        """
        data = Points.make(x, y, counts, noise)
        if data is None:
            raise ValueError("At least 3 finite losses are needed.")
        scale2, noise2 = self._fit(data)
        return scale2 * data.std**2, noise2 * data.std**2

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = (a[:, None] - b[None, :]) / self.length_scale
        return np.exp(-0.5 * d * d)

    def _fit(self, data: Points) -> tuple[float, float]:
        """Exact ML fit of (output scale, noise) with the length scale fixed.

        With `K = s2 * (r * K0 + D)` (r the signal-to-noise ratio, D the
        relative noise of each point) the likelihood maximised over `s2` is
        a function of `r` alone, evaluated in O(n) per `r` after one
        eigendecomposition of `D^-1/2 K0 D^-1/2`.
        """
        w = 1.0 / np.sqrt(data.noise)
        k0 = self._kernel(data.x, data.x) * w[:, None] * w[None, :]
        lam, vec = np.linalg.eigh(k0)
        lam = np.maximum(lam, 0.0)
        z2 = (vec.T @ (w * data.y)) ** 2
        n = data.size

        def profile_nll(log10_r: np.ndarray) -> np.ndarray:
            d = 10.0 ** log10_r[:, None] * lam[None, :] + 1.0
            s2 = np.mean(z2[None, :] / d, axis=1)
            # The floor keeps constant losses (all z2 = 0) finite.
            return n * np.log(s2 + 1e-300) + np.sum(np.log(d), axis=1)

        nll = profile_nll(_LOG10_SNR_GRID)
        best = int(np.argmin(nll))
        # Refine inside the neighbouring grid cells.
        lo = _LOG10_SNR_GRID[max(best - 1, 0)]
        hi = _LOG10_SNR_GRID[min(best + 1, _LOG10_SNR_GRID.size - 1)]
        fine = np.linspace(lo, hi, 41)
        log10_r = float(fine[int(np.argmin(profile_nll(fine)))])
        r = 10.0**log10_r
        noise2 = max(float(np.mean(z2 / (r * lam + 1.0))), MIN_NOISE)
        return r * noise2, noise2

    def _posterior(
        self, data: Points, scale2: float, noise2: float
    ) -> Posterior:
        grid = np.linspace(0.0, 1.0, self.grid_size)
        gram = scale2 * self._kernel(data.x, data.x)
        gram[np.diag_indices_from(gram)] += noise2 * data.noise
        chol = linalg.cho_factor(gram, lower=True, check_finite=False)
        cross = scale2 * self._kernel(data.x, grid)  # (n, G)
        mean = cross.T @ linalg.cho_solve(chol, data.y, check_finite=False)
        half = linalg.solve_triangular(
            chol[0], cross, lower=True, check_finite=False
        )
        var = np.maximum(scale2 - np.sum(half * half, axis=0), 0.0)
        # Variance of f(x_i) - f(1) for every grid point i before now.
        now = grid.size - 1
        prior_cov_now = scale2 * self._kernel(grid[:-1], grid[now:])[:, 0]
        cov_now = prior_cov_now - half[:, :-1].T @ half[:, now]
        diff_var = var[:-1] + var[now] - 2.0 * cov_now + self.jitter
        return posterior_of(data, grid, mean, var, diff_var)


def posterior_of(
    data: Points,
    grid: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    diff_var: np.ndarray,
) -> Posterior:
    """The `Posterior` in loss units, from the standardised posterior mean
    and variance on `grid` and the variance of each `f(x_i) - f(1)`."""
    now = grid.size - 1
    z = (mean[now] - mean[:-1]) / np.sqrt(np.maximum(diff_var, 1e-300))
    p = 0.5 * math.erfc(-float(np.max(z)) / math.sqrt(2.0))
    return Posterior(
        x=grid,
        mean=data.center + data.std * mean,
        std=data.std * np.sqrt(var),
        past_minimum_probability=p,
    )


_BLAS: list[ThreadpoolController] = []


def _blas() -> ThreadpoolController:
    """The process's thread pools, scanned once (a scan costs milliseconds
    once TensorFlow's libraries are loaded)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0]
