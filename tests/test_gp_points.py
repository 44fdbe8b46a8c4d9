"""gp_points: the standardised points of a GP test, and their subsampling."""

import numpy as np
import pytest

from keras_autolr.gp_points import Points, subsample


def test_points_keep_the_finite_ones_standardised_with_relative_noise():
    x = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    y = np.array([3.0, np.nan, 1.0, 2.0, np.inf])
    counts = np.array([1.0, 1.0, 2.0, 0.0, 1.0])
    noise = np.array([0.5, 0.5, 1.0, 1.0, 1.0])
    points = Points.make(x, y, counts, noise)
    # Left out: the NaN and inf losses, and the bin of no step, which
    # leaves two points: too few to test.
    assert points is None
    counts[3] = 1.0
    points = Points.make(x, y, counts, noise)
    kept = np.array([0, 2, 3])
    np.testing.assert_array_equal(points.x, x[kept])
    assert points.center == pytest.approx(2.0)
    assert points.std == pytest.approx(np.std(y[kept]))
    np.testing.assert_allclose(points.y * points.std + 2.0, y[kept])
    relative = noise[kept] / counts[kept]
    np.testing.assert_allclose(points.noise, relative / relative.mean())
    np.testing.assert_array_equal(points.take(np.array([1])).x, [0.5])


def test_constant_losses_stay_finite():
    points = Points.make(np.linspace(0, 1, 4), np.full(4, 2.0), None)
    assert points.std == 1.0
    np.testing.assert_array_equal(points.y, 0.0)
    np.testing.assert_array_equal(points.noise, 1.0)


def test_huge_noise_variances_do_not_overflow():
    noise = np.array([1e308, 1e308, 1.0, 1.0])
    points = Points.make(np.linspace(0, 1, 4), np.arange(4.0), None, noise)
    assert np.all(np.isfinite(points.noise))
    assert points.noise.mean() == pytest.approx(1.0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="same length"):
        Points.make(np.arange(4.0), np.arange(5.0), None)


@pytest.mark.parametrize("n, k", [(10, 4), (4, 10), (5, 5)])
def test_subsample_draws_sorted_distinct_indices(n, k):
    idx = subsample(np.random.default_rng(0), n, k)
    assert len(idx) == min(n, k)
    assert len(set(idx.tolist())) == len(idx)
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < n
    again = subsample(np.random.default_rng(0), n, k)
    np.testing.assert_array_equal(idx, again)
