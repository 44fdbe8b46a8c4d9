import math

import keras
import numpy as np
import pytest
import support

from keras_autolr.core.controller import AutoLRController
from keras_autolr.keras.backup import StateStore
from keras_autolr.keras.compat import learning_rate_variable, read_values
from keras_autolr.keras.weights import (
    WeightKeeper,
    WeightSnapshot,
    snapshot_variables,
)


def compiled_model(seed=0):
    """A small MLP with Adam, compiled; the optimizer is not built yet."""
    return support.digits_mlp(
        hidden=(16,), optimizer=keras.optimizers.Adam(1e-2), seed=seed
    )


def fit(model, steps=4):
    x, y = support.digits(256)
    model.fit(x, y, batch_size=64, epochs=1, steps_per_epoch=steps, verbose=0)


def fitted_model(seed=0):
    """After a few Adam steps: non-trivial optimizer state."""
    model = compiled_model(seed)
    fit(model)
    return model


def test_reads_return_every_value_bit_for_bit():
    model = fitted_model()
    variables = snapshot_variables(model)
    optimizer = model.optimizer
    # Weights, then Adam's two slots per weight; no step counter, no LR.
    assert len(variables) == 3 * len(model.weights)
    ids = {id(v) for v in variables}
    assert id(optimizer.iterations) not in ids
    assert id(learning_rate_variable(optimizer)) not in ids
    values = read_values(variables)
    assert len(values) == len(variables)
    for variable, value in zip(variables, values, strict=True):
        expected = variable.numpy()
        assert value.dtype == expected.dtype
        np.testing.assert_array_equal(value, expected)
    # A copy: training goes on without changing it.
    kept = [v.copy() for v in values]
    fit(model)
    assert not np.array_equal(values[0], variables[0].numpy())
    for value, copy in zip(values, kept, strict=True):
        np.testing.assert_array_equal(value, copy)


def test_models_of_the_same_layout_each_read_their_own_values():
    """The read function is shared by all models of one layout: it must
    read the variables it is given, not those it was first traced with."""
    first, second = fitted_model(seed=1), fitted_model(seed=2)
    for model in (first, second, first):
        variables = snapshot_variables(model)
        for variable, value in zip(
            variables, read_values(variables), strict=True
        ):
            np.testing.assert_array_equal(value, variable.numpy())
    assert not np.array_equal(
        first.weights[0].numpy(), second.weights[0].numpy()
    )


def test_restore_puts_back_weights_and_optimizer_state_exactly():
    # Made before the optimizer is built, as AutoLR does in
    # on_train_begin: the copy must still hold the optimizer's slots.
    model = compiled_model()
    snapshot = WeightSnapshot(model)
    assert not snapshot.taken
    fit(model)
    assert snapshot.take(step=7)
    assert snapshot.taken and snapshot.step == 7
    variables = snapshot_variables(model)
    assert len(variables) == 3 * len(model.weights)
    kept = [v.numpy().copy() for v in variables]
    iterations = int(model.optimizer.iterations.numpy())
    fit(model)
    moved = int(model.optimizer.iterations.numpy())
    assert moved > iterations
    assert not np.array_equal(variables[-1].numpy(), kept[-1])
    snapshot.restore()
    for variable, value in zip(variables, kept, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    # The step counter is not moved back.
    assert int(model.optimizer.iterations.numpy()) == moved
    snapshot.release()
    assert not snapshot.taken


def test_non_finite_weights_are_not_kept():
    model = fitted_model()
    snapshot = WeightSnapshot(model)
    assert snapshot.take(step=1)
    good = model.weights[0].numpy().copy()
    bad = good.copy()
    bad[0, 0] = np.nan
    model.weights[0].assign(bad)
    assert not snapshot.take(step=2)
    # The earlier copy is still the one kept.
    assert snapshot.step == 1
    snapshot.restore()
    np.testing.assert_array_equal(model.weights[0].numpy(), good)


def test_a_copy_read_back_from_disk_restores_into_a_new_model():
    """After a restart: the copy's arrays, no variables bound yet."""
    source = fitted_model(seed=0)
    kept = read_values(snapshot_variables(source))
    target = fitted_model(seed=1)
    snapshot = WeightSnapshot(target)
    snapshot.load(12, kept)
    assert snapshot.taken and snapshot.step == 12
    snapshot.restore()
    for variable, value in zip(snapshot_variables(target), kept, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_copy_of_another_model_is_refused():
    kept = read_values(snapshot_variables(fitted_model()))
    other = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    other.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    other.fit(np.zeros((8, 64)), np.zeros((8, 10)), verbose=0)
    snapshot = WeightSnapshot(other)
    snapshot.load(3, kept)
    before = [v.numpy().copy() for v in other.weights]
    with pytest.raises(ValueError, match="step 3 .* another model"):
        snapshot.restore()
    for variable, value in zip(other.weights, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


def ramp_lr_at(step):
    """A ramp of one decade per 100 steps."""
    return 1e-3 * 10 ** (step / 100)


class _Report:
    """What `WeightKeeper.offer` reads of a controller's `Report`, in
    warmup with the loss at its lowest, along `ramp_lr_at`. (A `Report`
    made by hand has no loss record: its `at_lowest_loss` is `False`.)"""

    phase = "warmup"
    lr_at_minimum = None
    steps = 0
    tests_run = 0
    probability = 0.1  # The detector is unsure: no copy is urgent.
    at_lowest_loss = True

    @property
    def last_lr(self):
        return ramp_lr_at(self.steps - 1)


def test_a_restarted_keeper_takes_copies_at_the_same_tests(tmp_path):
    """At tests, a copy is taken every few tests while the detector is
    unsure. The count of tests at the last copy is saved with the copies:
    a run restarted from the saved state takes the same copies as the
    uninterrupted run (and so rolls back to the same weights)."""
    model = fitted_model()
    store = StateStore(tmp_path)
    report = _Report()
    keeper = WeightKeeper(model, ramp_lr_at)
    report.tests_run, report.steps = 9, 90
    keeper.offer(report, at_test=True)
    assert keeper.pending.step == 90  # The first copy.
    store.save(3, keeper.save(store))
    restarted = WeightKeeper(model, ramp_lr_at)
    restarted.load(store, store.load(3))
    # One test later, both confirm the copy of step 90 and take no other.
    report.tests_run, report.steps = 10, 100
    for k in (keeper, restarted):
        k.offer(report, at_test=True)
        assert (k.confirmed.step, k.pending.taken) == (90, False)


def _offer_at(keeper, report, model, step, minimum_step=None):
    """Offers a copy at `step` (the first weight set to the step, so that a
    restored copy tells where it came from), the smoothed minimum of the
    latest test at the LR of `minimum_step`."""
    model.weights[0].assign(np.full(model.weights[0].shape, step))
    report.steps = step
    if minimum_step is not None:
        report.lr_at_minimum = ramp_lr_at(minimum_step)
    keeper.offer(report)


def _ladder(keeper):
    return [c.step for c in keeper.ladder]


def _keeper_with_ladder():
    """A keeper whose ladder is [110, 130], pending 135, the smoothed
    minimum at the LR of step 108."""
    model = fitted_model()
    report, keeper = _Report(), WeightKeeper(model, ramp_lr_at)
    _offer_at(keeper, report, model, 100)  # No test yet: no minimum.
    assert _ladder(keeper) == [] and keeper.pending.step == 100
    for step, minimum, ladder in [
        (110, 105, [100]),  # 100 is below the minimum: the only copy kept.
        (120, 115, [110]),
        (130, 115, [110, 120]),  # 120 is past it: 110 stays below.
        (135, 108, [110, 130]),  # The minimum moved back: the oldest stays.
    ]:
        _offer_at(keeper, report, model, step, minimum)
        assert _ladder(keeper) == ladder, step
        assert keeper.pending.step == step
    return model, report, keeper


def test_the_ladder_keeps_a_copy_below_the_minimum_during_warmup_only():
    model, report, keeper = _keeper_with_ladder()
    report.phase = "decay"
    _offer_at(keeper, report, model, 140)
    assert _ladder(keeper) == [135]


@pytest.mark.parametrize(
    "max_lr_step, restored", [(None, 130), (132, 130), (108, 110)]
)
def test_a_rollback_takes_the_newest_copy_at_or_below_the_bound(
    tmp_path, max_lr_step, restored
):
    """At most the LR of step `max_lr_step`, else the oldest copy; the
    newest confirmed one without a bound. The same after the copies are
    read back from disk."""
    model, report, keeper = _keeper_with_ladder()
    store = StateStore(tmp_path)
    store.save(1, keeper.save(store))
    restarted = WeightKeeper(model, ramp_lr_at)
    restarted.load(store, store.load(1))
    assert _ladder(restarted) == [110, 130]
    assert restarted.pending.step == 135
    bound = None if max_lr_step is None else ramp_lr_at(max_lr_step)
    for k in (keeper, restarted):
        model.weights[0].assign(np.zeros(model.weights[0].shape))
        assert k.restore(bound) == restored
        np.testing.assert_array_equal(model.weights[0].numpy(), restored)


def _switch_copies(seed):
    """Warmup on a U-shaped loss in log LR (minimum at 0.01) whose noise
    grows past the minimum, copies offered at tests as the callback does.
    Returns the ramp LRs of the newest copy and of the copy restored at
    the switch, over the LR of the smoothed minimum."""
    ctl = AutoLRController(1000, background=False)
    keeper = WeightKeeper(fitted_model(), ctl.ramp_lr_at)
    rng = np.random.default_rng(seed)
    while True:
        x = math.log10(ctl.lr / 1e-2)
        noise = 0.02 + 0.2 * max(x, 0.0)
        report = ctl.update(1.0 + 0.5 * x * x + noise * rng.normal())
        if report.switch is not None:
            newest = keeper.confirmed.step
            lowest = report.lr_at_minimum
            assert lowest == ctl.lr_at_minimum == report.switch["minimum_lr"]
            restored = keeper.restore(lowest)
            return [
                float(ctl.ramp_lr_at(step)) / lowest
                for step in (newest, restored)
            ]
        if report.tested:
            keeper.offer(report, at_test=True)


def test_the_switch_restores_a_copy_from_near_the_smoothed_minimum():
    """Noise lows past the minimum get copied (the newest copy lies past
    the minimum's LR in most runs); the switch puts back a copy taken
    between half and 1.25x the LR of the smoothed minimum."""
    runs = [_switch_copies(seed) for seed in range(6)]
    assert sum(newest > 1.25 for newest, _ in runs) >= 3
    for _, restored in runs:
        assert 0.5 <= restored <= 1.25
