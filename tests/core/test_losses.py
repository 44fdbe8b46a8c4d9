import json
import math

import numpy as np
import pytest

from keras_autolr.core.losses import (
    LossRecord,
    at_lowest_loss,
    despike,
    local_noise,
    progress,
    rise,
)


def test_memory_is_bounded_and_losses_conserved():
    record = LossRecord(bin_steps=1, max_bins=64)
    losses = [1.0 + (i % 7) for i in range(5000)]
    for loss in losses:
        record.add(loss, 1)
    centers, means, counts = record.bins()
    assert len(means) < 64
    # The merged bins and the open one hold every step and loss exactly.
    state = record.get_state()
    assert counts.sum() + state["open_count"] == 5000 == record.steps
    total = np.sum(means * counts) + state["open_sum"]
    assert total == pytest.approx(sum(losses))
    width = counts[0]
    assert width == 128  # 1 step, doubled at each of the 7 merges.
    np.testing.assert_array_equal(counts, width)
    np.testing.assert_allclose(centers, (np.arange(len(counts)) + 0.5) * width)


def test_add_reports_the_step_at_which_the_last_bin_closed():
    record = LossRecord(bin_steps=4, max_bins=16)
    assert record.add(1.0, 3) is None  # The first bin is still open.
    assert record.add(2.0, 6) == 8  # Bins 0-4 and 4-8 close.
    assert record.num_bins == 2 and record.closed_steps == 8
    assert record.steps == 9
    _, means, counts = record.bins()
    # Bin 0: 3 steps of 1.0 and one of 2.0; bin 1: four of 2.0.
    np.testing.assert_array_equal(means, [1.25, 2.0])
    np.testing.assert_array_equal(counts, [4.0, 4.0])


def test_a_non_finite_loss_marks_its_bin_and_survives_json():
    record = LossRecord(bin_steps=2, max_bins=16)
    for loss in (1.0, math.nan, 2.0, 3.0, math.inf):
        record.add(loss, 1)
    state = json.loads(json.dumps(record.get_state()))
    clone = LossRecord(bin_steps=2, max_bins=16)
    clone.set_state(state)
    _, means, _ = clone.bins()
    assert np.isnan(means[0]) and means[1] == 2.5
    assert clone.steps == 5
    # The open bin (inf) is stored as missing: it stays non-finite.
    clone.add(1.0, 1)
    assert not np.isfinite(clone.bins()[1][2])


def test_add_each_records_one_step_per_loss():
    each, single = LossRecord(3, 16), LossRecord(3, 16)
    losses = np.linspace(1.0, 2.0, 11)
    closed = each.add_each(losses)
    steps = [single.add(float(v), 1) for v in losses]
    assert closed == 9 == max(s for s in steps if s is not None)
    assert each.get_state() == single.get_state()
    assert each.add_each(np.ones(1)) == 12


def test_bins_are_read_only_and_follow_each_closed_bin():
    record = LossRecord(bin_steps=2, max_bins=16)
    record.add(1.0, 2)
    centers, means, counts = record.bins()
    with pytest.raises(ValueError, match="read-only"):
        means[0] = 5.0
    record.add(3.0, 1)  # The open bin: the closed ones are unchanged.
    assert record.bins()[1] is means
    record.add(5.0, 1)
    np.testing.assert_array_equal(record.bins()[1], [1.0, 4.0])
    record.set_state(LossRecord(2, 16).get_state())
    assert record.bins()[1].size == 0


def test_despike_removes_isolated_outliers_and_keeps_real_rises():
    rng = np.random.default_rng(0)
    base = np.linspace(2.0, 1.0, 60) + 0.01 * rng.normal(size=60)
    spiky = base.copy()
    spiky[[20, 45, 59]] += [0.5, -0.4, 0.3]  # One at the very end.
    cleaned = despike(spiky)
    np.testing.assert_allclose(cleaned[:56], base[:56], atol=0.05)
    # At the end the window is one-sided: the spike is cut, not erased.
    assert abs(cleaned[59] - base[59]) < 0.1
    rising = np.concatenate([base[:50], base[49] + 0.1 * np.arange(1, 11)])
    kept = despike(rising)
    np.testing.assert_array_equal(kept[:58], rising[:58])
    # The one-sided window lags a steep rise by at most two bins at the end.
    assert np.all(kept[58:] >= rising[56])
    with_nan = spiky.copy()
    with_nan[10] = np.nan
    out = despike(with_nan)
    assert np.isnan(out[10])
    assert abs(out[20] - base[20]) < 0.05


def test_local_noise_follows_the_noise_of_each_stretch():
    rng = np.random.default_rng(0)
    quiet = 2.3 + 0.01 * rng.normal(size=100)
    loud = np.linspace(2.3, 0.5, 100) + 0.2 * rng.normal(size=100)
    means = np.concatenate([quiet, loud])
    noise = local_noise(means)
    assert noise.shape == means.shape
    np.testing.assert_allclose(np.median(noise[10:90]), 0.01, rtol=0.3)
    np.testing.assert_allclose(np.median(noise[110:190]), 0.2, rtol=0.3)
    # Bin 50 takes the 16 successive differences 42..57, scaled as a MAD.
    d = np.diff(means)[42:58]
    expected = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)
    assert noise[50] == pytest.approx(expected, rel=1e-12)
    # Non-finite bins are left out and get NaN; the others stay finite.
    means[[5, 150]] = [np.nan, np.inf]
    noise = local_noise(means)
    assert np.isnan(noise[[5, 150]]).all()
    assert np.isfinite(np.delete(noise, [5, 150])).all()
    # Exactly repeated losses: no noise anywhere, and no division by 0.
    np.testing.assert_array_equal(local_noise(np.ones(40)), np.zeros(40))


def test_rise_is_how_far_the_recent_losses_are_above_their_lowest():
    rng = np.random.default_rng(1)
    t = np.linspace(0.0, 1.0, 120)
    shapes = {
        "falling": 2.0 - t,
        "u": 1.0 + 4.0 * (t - 0.6) ** 2,
        "knee": np.maximum(2.0 - 3.0 * t, 1.0),  # Falls, then levels off.
    }
    rises = {}
    for name, level in shapes.items():
        means = level + 0.01 * rng.normal(size=t.size)
        rises[name] = rise(means, local_noise(means))
    # Still falling: the latest median is the lowest.
    assert rises["falling"] == 0.0
    # Levelled off: above the lowest median by noise only, no vote.
    assert 0.0 <= rises["knee"] <= 2.0
    # Risen by 0.16 over noise of 0.01.
    assert rises["u"] > 10.0
    # By hand: medians of 8 of a V, noise 1 everywhere.
    v = np.abs(np.arange(-10.0, 11.0))
    noise = np.ones_like(v)
    running = np.median(np.lib.stride_tricks.sliding_window_view(v, 8), 1)
    assert rise(v, noise) == running[-1] - running.min()
    assert rise(v[:8], noise[:8]) == 0.0  # Too few bins.


def test_at_lowest_loss_compares_running_medians_not_single_bins():
    rng = np.random.default_rng(0)
    # A falling loss, then a long noisy plateau with one freak low bin.
    fall = np.linspace(2.0, 1.0, 100) + 0.05 * rng.normal(size=100)
    plateau = 1.0 + 0.05 * rng.normal(size=300)
    means = np.concatenate([fall, [0.2], plateau])
    # The plateau is the lowest level, although no bin is near 0.2.
    assert at_lowest_loss(means)
    # A sudden blow-up is caught at its first bin, before the median moves.
    blown = np.append(means, 3.0)
    assert not at_lowest_loss(blown)
    # A loss that climbs back up is not at its lowest either.
    assert not at_lowest_loss(np.append(blown, np.linspace(1.0, 1.5, 30)))
    # An unknown loss is not a low one; nothing recorded is not either.
    assert not at_lowest_loss(np.append(means, np.nan))
    assert not at_lowest_loss(np.array([]))


def test_progress_measures_the_fall_from_the_first_bins_in_noise():
    rng = np.random.default_rng(0)
    flat = 2.0 + 0.01 * rng.normal(size=40)
    assert progress(flat[:7]) is None  # Fewer than 8 finite bins.
    assert not progress(flat).fell_clearly
    fallen = np.concatenate([flat, 1.0 + 0.01 * rng.normal(size=40)])
    p = progress(fallen)
    assert p.start == pytest.approx(np.median(fallen[:8]), rel=1e-12)
    assert p.lowest == np.min(fallen)
    assert p.fell_clearly
    # Back 90 % of the way up to the start: lost; half way: not.
    assert p.lost(p.lowest + 0.9 * (p.start - p.lowest))
    assert not p.lost(p.lowest + 0.5 * (p.start - p.lowest))
