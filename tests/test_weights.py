import keras
import numpy as np
import pytest
import support

from keras_autolr.state_store import StateStore
from keras_autolr.weights import (
    WeightKeeper,
    WeightSnapshot,
    read_values,
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
    assert id(optimizer._learning_rate) not in ids
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


class _Tests:
    tests_run = 0
    last_probability = 0.1  # The detector is unsure: no copy is urgent.


class _Controller:
    """What `WeightKeeper.offer` reads of a controller, in warmup with the
    loss at its lowest."""

    phase = "warmup"
    minimum_lr = None
    steps = 0
    copy_within = 2.0

    def __init__(self):
        self.warmup_tests = _Tests()

    def at_lowest_loss(self):
        return True


def test_a_restarted_keeper_takes_copies_at_the_same_tests(tmp_path):
    """At tests, a copy is taken every few tests while the detector is
    unsure. The count of tests at the last copy is saved with the copies:
    a run restarted from the saved state takes the same copies as the
    uninterrupted run (and so rolls back to the same weights)."""
    model = fitted_model()
    store = StateStore(tmp_path)
    ctl = _Controller()
    keeper = WeightKeeper(model)
    ctl.warmup_tests.tests_run, ctl.steps = 9, 90
    keeper.offer(ctl, at_test=True)
    assert keeper.pending.step == 90  # The first copy.
    store.save(3, keeper.save(store))
    restarted = WeightKeeper(model)
    restarted.load(store, 3)
    # One test later, both confirm the copy of step 90 and take no other.
    ctl.warmup_tests.tests_run, ctl.steps = 10, 100
    for k in (keeper, restarted):
        k.offer(ctl, at_test=True)
        assert (k.confirmed.step, k.pending.taken) == (90, False)
