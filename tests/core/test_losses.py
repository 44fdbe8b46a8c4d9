import json
import math

import numpy as np
import pytest

from keras_autolr.loss_record import LossRecord


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
