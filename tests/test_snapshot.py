import keras
import numpy as np
import support

from keras_autolr.snapshot import (
    VariableReader,
    WeightSnapshot,
    snapshot_variables,
)


def fitted_model(steps=4, seed=0):
    """A small MLP after a few Adam steps: non-trivial optimizer state."""
    x, y = support.digits(256)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=1, steps_per_epoch=steps, verbose=0)
    return model, (x, y)


def test_the_reader_returns_every_value_bit_for_bit():
    model, _ = fitted_model()
    variables = snapshot_variables(model)
    optimizer = model.optimizer
    # Weights, then Adam's two slots per weight; no step counter, no LR.
    assert len(variables) == 3 * len(model.weights)
    ids = {id(v) for v in variables}
    assert id(optimizer.iterations) not in ids
    assert id(optimizer._learning_rate) not in ids
    values = VariableReader(variables)()
    assert len(values) == len(variables)
    for variable, value in zip(variables, values, strict=True):
        expected = variable.numpy()
        assert value.dtype == expected.dtype
        np.testing.assert_array_equal(value, expected)
    # Values read now, not when the reader was built: it follows training.
    reader = VariableReader(variables)
    before = reader()
    model.fit(*fitted_model()[1], batch_size=64, epochs=1, verbose=0)
    after = reader()
    assert not np.array_equal(before[0], after[0])
    np.testing.assert_array_equal(after[0], variables[0].numpy())


def test_models_of_the_same_layout_each_read_their_own_values():
    """The read function is shared by all models of one layout: it must
    read the variables it is given, not those it was first traced with."""
    first, _ = fitted_model(seed=1)
    second, _ = fitted_model(seed=2)
    for model in (first, second, first):
        variables = snapshot_variables(model)
        values = VariableReader(variables)()
        for variable, value in zip(variables, values, strict=True):
            np.testing.assert_array_equal(value, variable.numpy())
    assert not np.array_equal(
        first.weights[0].numpy(), second.weights[0].numpy()
    )


def test_restore_puts_back_weights_and_optimizer_state_exactly():
    model, data = fitted_model()
    snapshot = WeightSnapshot(model)
    assert not snapshot.taken
    assert snapshot.take(step=7)
    assert snapshot.taken and snapshot.step == 7
    variables = snapshot_variables(model)
    kept = [v.numpy().copy() for v in variables]
    iterations = int(model.optimizer.iterations.numpy())
    model.fit(*data, batch_size=64, epochs=1, verbose=0)
    moved = int(model.optimizer.iterations.numpy())
    assert moved > iterations
    snapshot.restore()
    for variable, value in zip(variables, kept, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    # The step counter is not moved back.
    assert int(model.optimizer.iterations.numpy()) == moved
    snapshot.release()
    assert not snapshot.taken


def test_non_finite_weights_are_not_kept():
    model, _ = fitted_model()
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
