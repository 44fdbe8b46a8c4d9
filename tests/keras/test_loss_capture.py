"""StepLossTracker: a `keras.metrics.Mean` that keeps every update."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_autolr.step_losses import StepLosses, StepLossTracker

HERE = os.path.dirname(os.path.abspath(__file__))


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
    own = model._loss_tracker
    losses = StepLosses(model, every=4, chunk=1, epoch_steps=100)
    assert model._loss_tracker is losses.tracker
    assert model.metrics == [losses.tracker]  # Not tracked twice.
    with pytest.raises(RuntimeError, match="did not update"):
        losses.read(0, 2)
    with pytest.raises(ValueError, match="4 slots"):
        losses.read(0, 5)
    losses.remove()
    assert model._loss_tracker is own


@pytest.mark.tensorflow_only
def test_replicas_under_a_mirrored_strategy_are_summed_on_read(tmp_path):
    """2 logical CPUs: each replica writes its own slots; a read sums them
    into the mean over the global batch."""
    out = tmp_path / "steps.json"
    subprocess.run(
        [sys.executable, os.path.join(HERE, "support.py"), "--devices", "2"]
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
