"""The smoothers a minimum test can use, and TensorFlow Probability's.

`make_detector(smoother)` gives the test of an option `smoother`: the exact
NumPy GP (`keras_autolr.core.gp.MinimumDetector`) or TFP's.

`TFPMinimumDetector` is a `MinimumDetector` whose GP is TensorFlow
Probability's: the output scale and noise maximise the log marginal
likelihood of `tfp.distributions.GaussianProcess`, and each posterior is a
`tfp.distributions.GaussianProcessRegressionModel`. Everything else is the
`MinimumDetector`'s: the same data (standardised, non-finite losses left
out), the same seeded subsamples, the same grid and the same vote, so that
the two smoothers can be compared test by test. Select it with
`smoother="tfp"` in `AutoLR` or `AutoLRController`.

Which substrate: TFP's NumPy substrate
(`tensorflow_probability.substrates.numpy`). Its TensorFlow substrate
imports `tf-keras` (Keras 2, and the full `tensorflow` wheel) next to the
Keras 3 this package trains with; the NumPy substrate needs neither, nor
even TensorFlow. It has no automatic differentiation, so the two
hyperparameters are fitted by SciPy's L-BFGS-B (finite-difference
gradients) on TFP's `log_prob`, in log-parameter space, rather than by the
reference's 100 Adam steps.

Install: `pip install "keras-autolr[tfp]"`.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import numpy as np
from scipy import optimize

from keras_autolr.core import checks as check
from keras_autolr.core.gp import (
    MIN_NOISE,
    MinimumDetector,
    Points,
    posterior_of,
)
from keras_autolr.core.options import SMOOTHERS

# The box the fit searches, for the standardised data (variance 1): the
# noise variance above the floor of the NumPy smoother, the output scale
# variance up to far beyond the data's.
_LOG_NOISE = (float(np.log(MIN_NOISE)), float(np.log(10.0)))
_LOG_SCALE = (float(np.log(1e-6)), float(np.log(1e4)))

_LOCK = threading.Lock()
_TFP: list[Any] = []


def make_detector(smoother: str = "numpy", **kwargs: Any) -> MinimumDetector:
    """The `MinimumDetector` of a smoother: `"numpy"` (the exact NumPy GP)
    or `"tfp"` (TensorFlow Probability's, `TFPMinimumDetector`).

    Raises:
        ValueError: for another `smoother`.
        ImportError: for `"tfp"` without TensorFlow Probability.
    """
    check.check_choice("smoother", smoother, SMOOTHERS)
    if smoother == "tfp":
        return TFPMinimumDetector(**kwargs)
    return MinimumDetector(**kwargs)


class TFPMinimumDetector(MinimumDetector):
    """A `MinimumDetector` whose GP is TensorFlow Probability's.

    Same arguments and results as `MinimumDetector`. The kernel is TFP's
    `ExponentiatedQuadratic` of fixed length scale; the constant mean is
    the data mean, as in `MinimumDetector`. The output scale and noise
    maximise `GaussianProcess(...).log_prob` of the fitting subsample
    (L-BFGS-B in log-parameter space, started from the noise of successive
    differences); each posterior is a `GaussianProcessRegressionModel`.

    Losses with unequal noise (bins of several steps, or the local noise
    the package's filters give each bin) enter TFP's homoscedastic GP
    whitened: each loss and the kernel are scaled by `1 / sqrt` of the
    loss's relative noise (the
    `ExponentiatedQuadratic`, subclassed to read the factor as a second
    feature), which is the same likelihood up to a constant and the same
    posterior of the noise-free curve.

    Raises:
        ImportError: if TensorFlow Probability is not installed.

    Example:

    >>> x = np.linspace(0, 1, 200, endpoint=False)
    >>> y = (x - 0.5) ** 2 + 0.01 * np.random.default_rng(0).normal(size=200)
    >>> TFPMinimumDetector().test(x, y).past_minimum
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tfp_numpy()  # Fails now, not at the first test, without TFP.

    def _gp_parts(self, data: Points, scale2: float):
        """TFP's kernel and index points for `data` (whitened if its
        noise is not the same everywhere), and the observations."""
        tfp = tfp_numpy()
        psd = tfp.math.psd_kernels
        rbf = psd.ExponentiatedQuadratic(
            amplitude=np.float64(np.sqrt(scale2)),
            length_scale=np.float64(self.length_scale),
        )
        if np.all(data.noise == 1.0):
            # One noise level (mean 1): TFP's plain GP, as the reference.
            return rbf, data.x[:, None], data.y
        weighted = _weighted_kernel_class()(
            amplitude=rbf.amplitude, length_scale=rbf.length_scale
        )
        w = 1.0 / np.sqrt(data.noise)
        return weighted, np.stack([data.x, w], axis=-1), w * data.y

    def _fit(self, data: Points) -> tuple[float, float]:
        """Output scale and noise variance that maximise TFP's marginal
        likelihood, with the length scale fixed."""
        tfd = tfp_numpy().distributions

        def neg_log_lik(theta: np.ndarray) -> float:
            scale2, noise2 = np.exp(theta)
            kernel, points, y = self._gp_parts(data, scale2)
            gp = tfd.GaussianProcess(
                kernel=kernel,
                index_points=points,
                observation_noise_variance=np.float64(noise2),
                jitter=0.0,
            )
            value = -float(gp.log_prob(y))
            return value if np.isfinite(value) else 1e300

        # Start: the noise of successive differences, the rest signal.
        noise0 = 0.5 * float(np.mean(np.diff(data.y) ** 2))
        noise0 = float(np.clip(noise0, 1e-4, 0.9))
        start = np.log([max(1.0 - noise0, 1e-3), noise0])
        result = optimize.minimize(
            neg_log_lik,
            start,
            method="L-BFGS-B",
            bounds=[_LOG_SCALE, _LOG_NOISE],
        )
        scale2, noise2 = np.exp(result.x)
        return float(scale2), float(noise2)

    def _posterior(self, data: Points, scale2: float, noise2: float):
        tfd = tfp_numpy().distributions
        grid = np.linspace(0.0, 1.0, self.grid_size)
        kernel, points, y = self._gp_parts(data, scale2)
        # The latent curve itself: a grid point has weight 1.
        grid_points = grid[:, None]
        if points.shape[-1] == 2:
            grid_points = np.stack([grid, np.ones_like(grid)], axis=-1)
        gprm = tfd.GaussianProcessRegressionModel.precompute_regression_model(
            kernel=kernel,
            index_points=grid_points,
            observation_index_points=points,
            observations=y,
            observation_noise_variance=np.float64(noise2),
            predictive_noise_variance=np.float64(0.0),
            jitter=0.0,
        )
        mean = np.asarray(gprm.mean(), dtype=np.float64)
        cov = np.asarray(gprm.covariance(), dtype=np.float64)
        var = np.maximum(np.diag(cov), 0.0)
        diff_var = var[:-1] + var[-1] - 2.0 * cov[:-1, -1] + self.jitter
        return posterior_of(data, grid, mean, var, diff_var)


_WEIGHTED: list[type] = []


def _weighted_kernel_class() -> type:
    """TFP's `ExponentiatedQuadratic` of the first feature, times the
    second feature of each point: `k((x, w), (x', w')) = w w' k(x, x')`.
    A GP with this kernel, observations `w y` and one noise variance is a
    GP on `y` whose noise variance at each point is that one over `w^2`.
    """
    if not _WEIGHTED:
        base = tfp_numpy().math.psd_kernels.ExponentiatedQuadratic

        class WeightedExponentiatedQuadratic(base):
            def _apply(self, x1, x2, example_ndims=0):
                k = super()._apply(x1[..., :1], x2[..., :1], example_ndims)
                return k * x1[..., 1] * x2[..., 1]

            def _matrix(self, x1, x2):
                k = super()._matrix(x1[..., :1], x2[..., :1])
                return k * x1[..., :, None, 1] * x2[..., None, :, 1]

            def _tensor(self, x1, x2, x1_example_ndims, x2_example_ndims):
                raise NotImplementedError("Only `apply` and `matrix`.")

        _WEIGHTED.append(WeightedExponentiatedQuadratic)
    return _WEIGHTED[0]


def tfp_numpy() -> Any:
    """`tensorflow_probability.substrates.numpy`, imported on first use.

    TFP 0.25's package `__init__` loads its TensorFlow-substrate modules,
    which need `tf-keras`, whenever TensorFlow is already imported, even if
    only the NumPy substrate is asked for: in a Keras process on the
    TensorFlow backend the import fails. So, during that one import,
    `sys.modules["tensorflow"]` is a proxy that forwards every attribute
    to TensorFlow but lists none (TFP's test is `"compat" in dir(tf)`).
    The NumPy substrate itself never uses TensorFlow.

    Raises:
        ImportError: if TensorFlow Probability is not installed.
    """
    if _TFP:
        return _TFP[0]
    with _LOCK:
        if not _TFP:
            _TFP.append(_import_tfp_numpy())
    return _TFP[0]


def _import_tfp_numpy() -> Any:
    tf = sys.modules.get("tensorflow")
    hide = tf is not None and "tensorflow_probability" not in sys.modules
    if hide:
        sys.modules["tensorflow"] = _Unlisted(tf)
    try:
        from tensorflow_probability.substrates import numpy as tfp
    except ImportError as error:
        raise ImportError(
            'smoother="tfp" needs TensorFlow Probability (its NumPy '
            'substrate). Install it with `pip install "keras-autolr[tfp]"` '
            "(or `pip install tensorflow-probability`), or use the default "
            'smoother="numpy".'
        ) from error
    finally:
        if hide:
            sys.modules["tensorflow"] = tf
    return tfp


class _Unlisted(types.ModuleType):
    """A module that forwards every attribute to `module` but lists none."""

    def __init__(self, module: types.ModuleType) -> None:
        super().__init__(module.__name__)
        self.__dict__["_module"] = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_module"], name)

    def __dir__(self) -> list[str]:
        return []
