"""loss_capture: the per-step loss record of the train step
(`StepLossTracker`, `StepLosses`) and the losses read from the logs
(`LoggedLosses`)."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_autolr.core.events import Report
from keras_autolr.keras import compat
from keras_autolr.keras.loss_capture import (
    LoggedLosses,
    Losses,
    StepLosses,
    StepLossTracker,
)

# tests/, where the helper scripts are.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_mean_and_each_update_match_numpy():
    rng = np.random.default_rng(0)
    tracker, mean = StepLossTracker(capacity=4), keras.metrics.Mean()
    updates = [
        (rng.normal(size=()), 8),  # A scalar loss weighted by the batch.
        (rng.normal(size=(5,)), None),
        (rng.normal(size=(3,)), rng.uniform(size=(3,))),
    ]
    expected = []
    for values, weight in updates:
        tracker.update_state(values, sample_weight=weight)
        mean.update_state(values, sample_weight=weight)
        w = np.ones_like(values) if weight is None else np.asarray(weight)
        w = np.broadcast_to(w, np.shape(values))
        expected.append(np.sum(values * w) / np.sum(w))
    assert float(tracker.result()) == pytest.approx(float(mean.result()))
    sums, counts = keras.ops.convert_to_numpy(tracker.steps.value).T
    np.testing.assert_allclose(sums[:3] / counts[:3], expected, rtol=1e-6)
    assert counts[3] == 0  # Not written yet.


def test_the_ring_wraps_and_a_nan_stays_in_its_slot():
    tracker = StepLossTracker(capacity=3)
    for loss in [1.0, 2.0, math.nan, 4.0, 5.0]:
        tracker.update_state(loss)
    sums, counts = keras.ops.convert_to_numpy(tracker.steps.value).T
    np.testing.assert_array_equal(counts, 1.0)
    # Updates 3 and 4 overwrote slots 0 and 1; the NaN of update 2 is
    # only in slot 2.
    np.testing.assert_array_equal(sums[:2], [4.0, 5.0])
    assert math.isnan(sums[2])
    tracker.reset_state()
    assert int(keras.ops.convert_to_numpy(tracker.step_index.value)) == 0
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(tracker.steps.value), 0.0
    )


def test_a_read_that_the_train_step_did_not_write_says_what_to_do():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    own = compat.loss_tracker(model)
    losses = StepLosses(model, every=4, chunk=1, epoch_steps=100)
    assert compat.loss_tracker(model) is losses.tracker
    assert model.metrics == [losses.tracker]  # Not tracked twice.
    with pytest.raises(RuntimeError, match="did not update"):
        losses.read_steps(0, 2)
    with pytest.raises(ValueError, match="4 slots"):
        losses.read_steps(0, 5)
    losses.remove()
    assert compat.loss_tracker(model) is own


@pytest.mark.tensorflow_only
def test_replicas_under_a_mirrored_strategy_are_summed_on_read(tmp_path):
    """2 logical CPUs: each replica writes its own slots; a read sums them
    into the mean over the global batch."""
    out = tmp_path / "steps.json"
    subprocess.run(
        [sys.executable, os.path.join(TESTS, "support.py"), "--devices", "2"]
        + ["--strategy", "mirrored", "--step-losses", "--out", str(out)],
        check=True,
        timeout=600,
    )
    run = json.loads(out.read_text())
    # Steps 1 to 4 of 0..4 (the ring holds 4): replicas report i+1 and
    # 2(i+1), 8 samples each.
    np.testing.assert_allclose(run["means"], [3.0, 4.5, 6.0, 7.5], rtol=1e-6)
    np.testing.assert_array_equal(run["counts"], 16.0)
    assert run["result"] == pytest.approx(1.5 * (1 + 2 + 3 + 4 + 5) / 5)


def fed(steps, switch_step=100):
    """The `Report` of a controller that has been fed `steps` steps."""
    return Report(lr=0.1, steps=steps, switch_step=switch_step)


def test_step_losses_are_read_at_test_points_the_switch_or_a_flush():
    """The losses of the steps since the last read come back where a
    decision needs them (a multiple of `every`, the switch step, the end
    of the epoch) or with `flush`; in between, `None`: no host sync."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    losses = StepLosses(model, every=4, chunk=1, epoch_steps=10)
    assert losses.tracker.capacity == 4  # The most steps between reads.

    def run(start, end):  # The train step of steps start..end-1.
        for step in range(start, end):
            losses.tracker.update_state(float(step + 1))

    run(0, 3)
    assert losses.horizon(fed(0)) == 4
    assert losses.read(3, {}, fed(0)) is None  # Before the test point.
    run(3, 4)
    read = losses.read(4, {}, fed(0))
    assert isinstance(read, Losses) and read.num_steps == 4
    np.testing.assert_array_equal(read.values, [1.0, 2.0, 3.0, 4.0])
    # The switch at step 6 comes before the next test point, 8.
    assert losses.horizon(fed(4, switch_step=6)) == 2
    run(4, 5)
    assert losses.read(5, {}, fed(4, switch_step=6)) is None
    read = losses.read(5, {}, fed(4, switch_step=6), flush=True)
    np.testing.assert_array_equal(read.values, [5.0])
    assert losses.read(5, {}, fed(5), flush=True) is None  # Nothing new.
    run(5, 8)
    read = losses.read(8, {}, fed(5))
    np.testing.assert_array_equal(read.values, [6.0, 7.0, 8.0])
    # The end of the epoch (10 steps) is a read point.
    run(8, 10)
    assert losses.horizon(fed(8)) == 2
    read = losses.read(10, {}, fed(8))
    np.testing.assert_array_equal(read.values, [9.0, 10.0])
    losses.remove()


def test_logged_losses_recover_each_chunk_s_mean_from_the_running_one():
    losses = LoggedLosses("loss", chunk=2)
    assert losses.horizon(fed(0)) == 2  # Read after every chunk.
    assert losses.read(2, {"loss": 1.0}, fed(0)) == Losses(1.0, 2)
    # Running mean 2.0 over 4 steps: the second chunk's mean is 3.0.
    assert losses.read(4, {"loss": 2.0}, fed(2)) == Losses(3.0, 2)
    assert losses.read(4, {"loss": 2.0}, fed(4)) is None  # No new step.
    # A non-finite loss poisons the running mean until the epoch ends:
    # those steps' losses are unknown.
    assert losses.read(6, {"loss": math.inf}, fed(4)) == Losses(math.inf, 2)
    assert losses.read(8, {"loss": math.inf}, fed(6)) == Losses(None, 2)
    losses.start_epoch()
    assert losses.read(2, {"loss": 0.5}, fed(8)) == Losses(0.5, 2)
    with pytest.raises(ValueError, match="monitor="):
        losses.read(4, {"accuracy": 0.5}, fed(10))
