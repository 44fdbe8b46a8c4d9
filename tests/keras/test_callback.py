import json
import re
import warnings

import keras
import numpy as np
import pytest
import support
import tensorflow as tf

from keras_autolr import AutoLR
from keras_autolr.keras import compat
from keras_autolr.keras.backup import BackupError
from keras_autolr.keras.weights import snapshot_variables


class Recorder(keras.callbacks.Callback):
    """Keeps the batch logs that callbacks after AutoLR see."""

    def __init__(self):
        super().__init__()
        self.batch_logs = []
        self.epoch_logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs))


def abs_model(dtype="float64", optimizer=None):
    """One weight `w`, loss `|w - 1|` with gradient sign(w - 1) exactly.

    Plain SGD then moves `w` by exactly the LR of each step, so the LR that
    the optimizer really applied can be read off the weights. As the LR
    grows `w` oscillates around 1 with an amplitude of the LR: a loss with a
    minimum that the detector must find.
    """
    inputs = keras.Input((1,), dtype=dtype)
    layer = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(1.5),
        dtype=dtype,
    )
    model = keras.Model(inputs, layer(inputs))
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(),
        loss=lambda y, p: keras.ops.mean(keras.ops.abs(p - 1.0)),
    )
    return model, layer


def ones(steps, batch=4, dtype="float64"):
    x = np.ones((steps * batch, 1), dtype=dtype)
    return x, x


class WeightTrace(keras.callbacks.Callback):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.values = []

    def on_train_begin(self, logs=None):
        kernel = support.value(self.model, self.layer.kernel)
        self.values.append(float(kernel[0, 0]))

    def on_train_batch_end(self, batch, logs=None):
        kernel = support.value(self.model, self.layer.kernel)
        self.values.append(float(kernel[0, 0]))


# With tests every 4 steps the host reads the losses every 4 steps: the
# schedule's values must reach the device before any step needs them.
@pytest.mark.parametrize(
    "decay, check_every", [("cosine", None), ("linear", None), ("cosine", 4)]
)
def test_applied_lr_equals_the_controller_every_step(decay, check_every):
    keras.utils.set_random_seed(0)
    model, layer = abs_model()
    x, y = ones(20)
    # The weights must move by the LR alone: no rollback of the weights.
    autolr = AutoLR(
        verbose=0,
        min_lr=1e-4,
        max_lr=10.0,
        restore_weights=False,
        decay=decay,
        check_every=check_every,
    )
    trace = WeightTrace(layer)
    recorder = Recorder()
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=10,
        shuffle=False,
        verbose=0,
        callbacks=[autolr, trace, recorder],
    )
    ctl = autolr.controller
    assert ctl.total_steps == 200  # 10 epochs x 20 steps, taken from fit.
    (event,) = ctl.events
    assert event["reason"] in ("minimum", "overshoot")  # A test decided.
    applied = np.abs(np.diff(trace.values))
    expected = ctl.lr_at(np.arange(200))
    # The device evaluates the schedule in float32: 1e-6 of the peak.
    np.testing.assert_allclose(
        applied, expected, rtol=1e-6, atol=1e-6 * ctl.landing_lr
    )
    assert expected[ctl.switch_step] == pytest.approx(ctl.landing_lr)
    # The rolled-back peak is below the LR reached before the switch.
    assert ctl.landing_lr < expected[ctl.switch_step - 1]
    # Logs seen by the callbacks after AutoLR.
    lrs = [logs["learning_rate"] for logs in recorder.batch_logs]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    phases = [logs["autolr_phase"] for logs in recorder.batch_logs]
    assert phases == [0] * ctl.switch_step + [1] * (200 - ctl.switch_step)
    assert recorder.epoch_logs[-1]["learning_rate"] == pytest.approx(
        expected[-1]
    )


class OwnTrainStep(keras.Sequential):
    """A model whose train step is its own: AutoLR reads its logs."""

    def train_step(self, *args, **kwargs):
        return super().train_step(*args, **kwargs)


def step_index_model(spe, model_class=keras.Sequential):
    """The loss of batch `i` is exactly `i + 1` (it ignores the prediction);
    returns the model and its data."""
    steps, batch = 12, 2
    y = np.repeat(np.arange(1, steps + 1, dtype="float32"), batch)[:, None]
    model = model_class([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(
        optimizer="sgd",
        loss=lambda t, p: keras.ops.mean(t) + 0.0 * keras.ops.mean(p),
        steps_per_execution=spe,
    )
    return model, np.zeros_like(y), y


def fit_step_index(model, x, y, autolr, epochs=2):
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[autolr],
    )
    return autolr.controller.loss_bins()


@pytest.mark.parametrize(
    "spe", [1, pytest.param(4, marks=pytest.mark.no_torch)]
)
# The sawtooth loss looks like a blow-up to the decay's guard.
@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
def test_the_loss_of_every_step_is_recorded(spe):
    """The train step records each step's loss, also inside a chunk."""
    model, x, y = step_index_model(spe)
    own = compat.loss_tracker(model)
    autolr = AutoLR(verbose=0)  # Bins of one step by default.
    centers, means, counts = fit_step_index(model, x, y, autolr)
    np.testing.assert_array_equal(means, np.tile(np.arange(1.0, 13.0), 2))
    np.testing.assert_array_equal(counts, 1.0)
    # The model gets its own loss tracker back, and Keras's logs were the
    # running mean all along.
    assert compat.loss_tracker(model) is own
    assert model.history.history["loss"] == [6.5, 6.5]
    assert model.evaluate(x, y, batch_size=2, verbose=0) == 6.5


class ReadSteps(keras.callbacks.Callback):
    """After each chunk: the steps AutoLR has fed its controller, and the
    LR it logged."""

    def __init__(self, autolr):
        super().__init__()
        self.autolr = autolr
        self.fed = []
        self.lrs = []

    def on_train_batch_end(self, batch, logs=None):
        self.fed.append(self.autolr.controller.steps)
        self.lrs.append(logs["learning_rate"])


@pytest.mark.parametrize(
    "spe, reads",
    [
        # Test points every 4 steps, the cap at 9, epochs of 12 steps.
        (1, [4, 8, 9, 12, 16, 20, 24]),
        # The cap falls where a chunk ends: at 8.
        pytest.param(2, [4, 8, 12, 16, 20, 24], marks=pytest.mark.no_torch),
    ],
)
@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
def test_the_losses_are_read_only_where_a_decision_needs_them(spe, reads):
    """Between two reads the host does not wait for the device; the logs
    still give the LR of every step."""
    model, x, y = step_index_model(spe)
    autolr = AutoLR(verbose=0, check_every=4)
    seen = ReadSteps(autolr)
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[autolr, seen],
    )
    ctl = autolr.controller
    assert ctl.ramp_steps == reads[2 if spe == 1 else 1]
    assert sorted(set(seen.fed) - {0}) == reads
    # Each chunk sees the last read at or before its end.
    ends = np.arange(spe, 25, spe)
    expected = [max(r for r in [0, *reads] if r <= end) for end in ends]
    assert seen.fed == expected
    np.testing.assert_allclose(seen.lrs, ctl.lr_at(ends - 1), rtol=1e-12)
    # Every step's loss arrived all the same.
    _, means, _ = ctl.loss_bins()
    np.testing.assert_array_equal(means, np.tile(np.arange(1.0, 13.0), 2))


@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_an_epoch_cut_short_is_read_at_its_end():
    """20 batches for 3 epochs of 8 steps: the data runs out 4 steps into
    the third epoch, before its next test point; its end reads them."""
    model, x, y = step_index_model(1)

    def batches():  # The loss of batch `i` is `i % 12 + 1`.
        for i in range(20):
            j = 2 * (i % 12)
            yield x[j : j + 2], y[j : j + 2]

    autolr = AutoLR(verbose=0, check_every=8)
    model.fit(
        batches(), epochs=3, steps_per_epoch=8, verbose=0, callbacks=[autolr]
    )
    ctl = autolr.controller
    assert ctl.steps == 20
    _, means, _ = ctl.loss_bins()
    np.testing.assert_array_equal(means, np.tile(np.arange(1.0, 13.0), 2)[:20])


@pytest.mark.no_torch  # steps_per_execution > 1.
# The sawtooth loss looks like a blow-up to the decay's guard.
@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
@pytest.mark.parametrize("spe", [4, 5])
def test_a_train_step_of_its_own_is_read_from_the_running_mean(spe):
    """Keras logs the epoch's running mean; AutoLR recovers each chunk's.
    With 5 steps per chunk, an epoch (12 steps) ends with a short chunk,
    which Keras numbers as a whole one."""
    model, x, y = step_index_model(spe, OwnTrainStep)
    autolr = AutoLR(verbose=0)  # Bins of one chunk by default.
    centers, means, counts = fit_step_index(model, x, y, autolr)
    assert autolr.controller.steps == 24
    # Each step gets the mean of its chunk; bins of `spe` steps.
    chunk_means = np.concatenate(
        [
            np.full(len(c), c.mean())
            for c in np.split(np.arange(1.0, 13.0), range(spe, 12, spe))
        ]
    )
    per_step = np.tile(chunk_means, 2)[: 24 // spe * spe]
    expected = per_step.reshape(-1, spe).mean(axis=1)
    np.testing.assert_allclose(means, expected, rtol=1e-6)
    np.testing.assert_array_equal(counts, float(spe))


@pytest.mark.no_torch  # steps_per_execution > 1.
# One epoch of 12 steps: the first test comes after the ramp.
@pytest.mark.filterwarnings("ignore:AutoLR tests the loss:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_bins_smaller_than_a_chunk_need_the_loss_of_every_step():
    model, x, y = step_index_model(4, OwnTrainStep)
    with pytest.raises(ValueError, match="bin_steps.*steps_per_execution"):
        fit_step_index(model, x, y, AutoLR(bin_steps=2), epochs=1)
    model, x, y = step_index_model(4)
    centers, means, counts = fit_step_index(
        model, x, y, AutoLR(bin_steps=2, verbose=0), epochs=1
    )
    np.testing.assert_array_equal(means, np.arange(1.5, 12.5, 2.0))


# |w - 1| at an LR near 0.5 looks like a blow-up to the decay's guard.
@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
def test_after_training_the_optimizer_is_left_as_found():
    model, _ = abs_model()
    x, y = ones(10)
    n_vars = None

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            nonlocal n_vars
            n_vars = len(self.model.optimizer.variables)

    autolr = AutoLR(verbose=0)
    compiled_lr = float(model.optimizer.learning_rate)
    model.fit(
        x, y, batch_size=4, epochs=3, verbose=0, callbacks=[autolr, Count()]
    )
    optimizer = model.optimizer
    assert n_vars == len(optimizer.variables)  # The LR variable stayed.
    assert isinstance(compat.learning_rate_variable(optimizer), keras.Variable)
    assert "_get_current_learning_rate" not in vars(optimizer)
    # Its LR is the one compiled (abs_model's), not AutoLR's last (0.0).
    assert autolr.controller.lr == 0.0
    assert float(optimizer.learning_rate) == pytest.approx(compiled_lr)
    # A second fit without AutoLR trains at a plain LR again.
    optimizer.learning_rate = 0.01
    before = float(model.layers[-1].kernel.numpy()[0, 0])
    model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)
    after = float(model.layers[-1].kernel.numpy()[0, 0])
    assert abs(after - before) == pytest.approx(0.01, rel=1e-6)


def test_verbose_prints_the_switch_and_a_summary(capsys):
    model, _ = abs_model()
    x, y = ones(20)
    model.fit(
        x,
        y,
        batch_size=4,
        epochs=10,
        shuffle=False,
        verbose=0,
        callbacks=[AutoLR(min_lr=1e-4, max_lr=10.0)],
    )
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("AutoLR:")
    ]
    assert len(lines) == 2  # The switch; the summary at the end.
    assert "warmup ended at step" in lines[0]
    assert "warmup ended at step" in lines[1] and "decay from" in lines[1]
    assert any(
        reason in lines[0]
        for reason in (
            "loss passed its minimum",
            "LR passed 3x the LR at the smoothed loss minimum",
        )
    )
    assert "linear to 0" in lines[0]


# ----------------------------------------------------------------------------
# Misuse: clear errors that say what to do.


@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_unknown_steps_per_epoch_says_what_to_do():
    model, _ = abs_model()

    def gen():
        while True:
            yield np.ones((4, 1)), np.ones((4, 1))

    ds = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec((4, 1), tf.float64),
            tf.TensorSpec((4, 1), tf.float64),
        ),
    )
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(ds, epochs=2, verbose=0, callbacks=[AutoLR()])
    # With the step count given, the same data trains.
    autolr = AutoLR(verbose=0)
    model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0, callbacks=[autolr])
    assert autolr.controller.total_steps == 10
    assert autolr.controller.steps == 10


@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_learning_rate_schedule_optimizer_is_refused():
    model, _ = abs_model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    x, y = ones(3)
    with pytest.raises(ValueError, match="plain float learning rate"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[AutoLR()])


@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_missing_monitor_says_what_to_do():
    model, _ = abs_model()
    x, y = ones(3)
    with pytest.raises(ValueError, match="monitor=") as info:
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=1,
            verbose=0,
            callbacks=[AutoLR(monitor="train_loss")],
        )
    assert "'loss'" in str(info.value)


def test_fit_longer_than_the_budget_is_refused():
    model, _ = abs_model()
    x, y = ones(3)
    with pytest.raises(ValueError, match="epochs=5.*AutoLR\\(epochs=3\\)"):
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=5,
            verbose=0,
            callbacks=[AutoLR(epochs=3)],
        )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs=0"),
        ({"steps_per_epoch": -2}, ValueError, "steps_per_epoch=-2"),
        ({"verbose": 3}, ValueError, "verbose=3"),
        ({"monitor": ""}, ValueError, "monitor=''"),
        ({"check_every": "step"}, ValueError, "check_every='step'"),
        ({"min_lr": -1.0}, ValueError, "min_lr=-1.0"),
        ({"max_lr": 1e-6}, ValueError, "max_lr"),
        ({"learning_rate": 0.1}, TypeError, "learning_rate"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AutoLR(**kwargs)


def test_config_round_trip():
    autolr = AutoLR(epochs=7, verbose=0, check_every="epoch", patience=5)
    config = autolr.get_config()
    clone = AutoLR.from_config(config)
    assert clone.get_config() == config
    assert config["patience"] == 5
    assert config["check_every"] == "epoch"


def linear_regression(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = x @ rng.normal(size=(8, 1)).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(), loss="mse")
    return model, x, y


# check_every=2000: no test before the cap, as the budget warning says.
@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
@pytest.mark.parametrize("check_every", [4, 2000])
def test_a_diverging_model_survives(check_every):
    """SGD on least squares diverges above LR ~1; AutoLR ramps to 1e4.

    With frequent tests the explosion rule ends warmup before the loss is
    non-finite; with tests too rare to help, the loss overflows, AutoLR
    rolls the LR back and restores the weights it kept.
    """
    model, x, y = linear_regression()
    autolr = AutoLR(verbose=0, min_lr=1e-4, max_lr=1e4, check_every=check_every)
    if check_every == 4:
        with warnings.catch_warnings():
            # Above LR ~1 SGD creeps back up in decay: a restart may follow.
            warnings.filterwarnings("ignore", "AutoLR.*during decay")
            warnings.filterwarnings("ignore", "AutoLR: restored")
            model.fit(
                x, y, batch_size=32, epochs=20, verbose=0, callbacks=[autolr]
            )
        reason = autolr.controller.events[0]["reason"]
        assert reason in ("explosion", "minimum", "overshoot")
    else:
        with pytest.warns(RuntimeWarning, match="non-finite") as seen:
            model.fit(
                x, y, batch_size=32, epochs=20, verbose=0, callbacks=[autolr]
            )
        assert autolr.controller.events[0]["reason"] == "divergence"
        assert any("restored the weights" in str(w.message) for w in seen)
    ctl = autolr.controller
    event = ctl.switch_event
    assert all(r["peak_lr"] < event["peak_lr"] for r in ctl.rescues)
    weights = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)
    assert (
        np.isfinite(ctl.landing_lr) and 0 < ctl.landing_lr < event["lr_before"]
    )
    assert ctl.landing_lr < 2.0  # Below where SGD diverges on this problem.
    # The model still fits the data after the rescue.
    assert model.evaluate(x, y, verbose=0) < 1e-2


class Sabotage(keras.callbacks.Callback):
    """Makes the weights non-finite at the first epoch begun in decay."""

    def __init__(self, autolr):
        super().__init__()
        self.autolr = autolr
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch is None and self.autolr.controller.phase == "decay":
            self.epoch = epoch
            self.model.set_weights(
                [np.full_like(w, np.nan) for w in self.model.get_weights()]
            )


def test_a_blow_up_in_decay_restores_the_weights_and_halves_the_lr():
    model, x, y = linear_regression()
    autolr = AutoLR(verbose=0, min_lr=1e-4, max_lr=1e4, check_every=4)
    sabotage = Sabotage(autolr)
    with pytest.warns(RuntimeWarning) as seen:
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=20,
            verbose=0,
            callbacks=[autolr, sabotage],
        )
    ctl = autolr.controller
    (rescue,) = ctl.rescues
    assert rescue["reason"] == "divergence"
    # Caught at the first read of the losses in the sabotaged epoch (16
    # steps each): the test point 4 steps in.
    assert rescue["step"] == 16 * sabotage.epoch + 4
    assert ctl.report().decay_lr == pytest.approx(0.5 * rescue["lr_before"])
    # A copy kept at the lowest loss, before the sabotage, came back (the
    # warning names its step), and the losses after it are finite again:
    # no second rescue.
    messages = [str(w.message) for w in seen]
    kept = [
        int(m.group(1))
        for m in map(re.compile(r"kept at step (\d+)").search, messages)
        if m is not None
    ]
    assert len(kept) == 1, messages
    assert 0 < kept[0] <= 16 * sabotage.epoch  # Before the sabotage.
    assert any("restored" in m for m in messages), messages
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert model.evaluate(x, y, verbose=0) < 1e-2


def test_weights_roll_back_to_the_lowest_loss_at_the_switch():
    """|w - 1| overshoots as the LR grows; the switch restores the weights
    kept at the lowest loss seen at a test, then decays from there."""
    model, layer = abs_model()
    trace = WeightTrace(layer)
    s = fit_abs(model, trace).controller.switch_step
    # trace.values[k] is read after AutoLR's hook of step k - 1, so
    # trace.values[s] already holds the weights restored at the switch.
    loss = np.abs(np.asarray(trace.values) - 1.0)
    assert loss[s] < loss[s - 1]  # Rolled back from the overshoot...
    # ...to a copy taken near the lowest loss: where the running median of
    # the last 8 losses (the oscillation of |w - 1| smoothed out) was
    # within noise of its lowest, after the minimum and before the switch.
    best = int(np.argmin(loss[:s]))
    kept = [
        j
        for j in range(s)
        if trace.values[j] == pytest.approx(trace.values[s], abs=1e-12)
    ]
    assert kept and best <= kept[-1] < s
    assert loss[kept[-1]] < 0.2 * loss[0]


class StateTrace(keras.callbacks.Callback):
    """The weights and optimizer slots after every batch."""

    def on_train_begin(self, logs=None):
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(
            [
                support.value(self.model, v).copy()
                for v in snapshot_variables(self.model)
            ]
        )


def fit_abs(
    model, *callbacks, initial_epoch=0, epochs=None, steps=20, **options
):
    """200 steps of `abs_model` with AutoLR (more `options`), in epochs of
    `steps` steps; `initial_epoch` and `epochs` (default: all) go to
    `fit`. Returns the AutoLR."""
    x, y = ones(steps)
    budget = 200 // steps
    autolr = AutoLR(
        epochs=budget, verbose=0, min_lr=1e-4, max_lr=10.0, **options
    )
    epochs = budget if epochs is None else epochs
    model.fit(
        x,
        y,
        batch_size=4,
        initial_epoch=initial_epoch,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[autolr, *callbacks],
    )
    return autolr


def test_the_switch_restores_the_optimizer_state_with_the_weights():
    """The optimizer is built at the first train step, after AutoLR's
    on_train_begin: its copies must still hold Adam's moments."""
    model, _ = abs_model(optimizer=keras.optimizers.Adam())
    assert not model.optimizer.built
    trace = StateTrace()
    s = fit_abs(model, trace).controller.switch_step
    # trace.values[k] is read after AutoLR's hook of step k: the state
    # restored at the switch is in trace.values[s - 1].
    restored = trace.values[s - 1]
    assert len(restored) == 3  # The kernel, Adam's m and v.
    kept = [
        k
        for k in range(s - 2)
        if all(
            np.array_equal(a, b)
            for a, b in zip(trace.values[k], restored, strict=True)
        )
    ]
    # Weights and moments both come from one earlier step.
    assert kept
    assert not np.array_equal(trace.values[s - 2][1], restored[1])


@pytest.mark.no_torch  # steps_per_execution > 1.
def test_a_first_test_late_on_the_ramp_is_warned_about():
    """Tests where chunks of 64 steps end: a ramp of 128 steps."""
    model, x, y = linear_regression()
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=64)
    autolr = AutoLR(verbose=0, epochs=20)
    with pytest.warns(RuntimeWarning, match="first test .* step 64, 50%"):
        model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[autolr])
    assert autolr.controller.first_test_step == 64
    # Enough steps for the same chunk: no warning (filterwarnings=error).
    autolr = AutoLR(verbose=0, epochs=64)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[autolr])
    assert autolr.controller.ramp_steps == 384  # 0.4 x 1024, in chunks.


def test_a_restarted_run_rolls_back_to_the_copy_kept_before_it(tmp_path):
    """The copy that the switch restores was kept before the restart: it
    comes back from `backup_dir`, and the run ends where an uninterrupted
    one does."""
    model, layer = abs_model()
    trace = WeightTrace(layer)
    whole = fit_abs(model, trace, steps=4)
    switch = whole.controller.switch_step
    # trace.values[j] holds the weights after j steps, as the copy of step
    # j does: the switch restores the copy of the last step whose weights
    # it puts back. The restart, at the first epoch end after that copy,
    # must fall between the two.
    kept = [j for j in range(switch) if trace.values[j] == trace.values[switch]]
    assert kept
    restored = kept[-1]
    # Epochs of 4 steps: the copy restored is the newest at or below the LR
    # of the smoothed minimum, a few epochs before the switch (at 3x).
    epoch = restored // 4 + 1
    assert restored < 4 * epoch < switch
    backup = tmp_path / "autolr"

    interrupted, _ = abs_model()
    fit_abs(interrupted, epochs=epoch, steps=4, backup_dir=backup)
    state = backup / f"autolr-epoch-{epoch:06d}.json"
    assert restored in json.loads(state.read_text())["weight_steps"]
    assert copies_on_disk(backup) == copies_named(backup) >= {restored}
    # A new callback, as in a new process: nothing kept in memory. The
    # model goes on from its weights after epoch 3 (SGD has no state).
    resumed = fit_abs(
        interrupted, initial_epoch=epoch, steps=4, backup_dir=backup
    )
    assert resumed.controller.events == whole.controller.events
    # Copies that no kept state names are gone.
    assert copies_on_disk(backup) == copies_named(backup)
    assert restored not in copies_on_disk(backup)
    np.testing.assert_array_equal(
        interrupted.get_weights(), model.get_weights()
    )

    # Without the copies on disk the same restart would end elsewhere: it
    # is refused, naming the missing copy (issue 32).
    again, _ = abs_model()
    fit_abs(again, epochs=epoch, steps=4, backup_dir=tmp_path / "other")
    for copy in (tmp_path / "other").glob("*.npz"):
        copy.unlink()
    with pytest.raises(BackupError, match="autolr-weights-.* is missing"):
        fit_abs(
            again, initial_epoch=epoch, steps=4, backup_dir=tmp_path / "other"
        )


def copies_on_disk(backup):
    return {int(p.stem.rsplit("-", 1)[1]) for p in backup.glob("*.npz")}


def copies_named(backup):
    return {
        step
        for p in backup.glob("autolr-epoch-*.json")
        for step in json.loads(p.read_text())["weight_steps"]
        if step is not None
    }


def test_a_second_fit_from_epoch_0_starts_a_new_schedule(tmp_path):
    """The same callback in a second `fit` from epoch 0 (a notebook cell
    run twice) behaves as a new one; a reused `backup_dir` forgets the
    earlier run."""
    backup = tmp_path / "autolr"

    def run(autolr):
        model, layer = abs_model()
        trace, recorder = WeightTrace(layer), Recorder()
        x, y = ones(20)
        fit = dict(batch_size=4, shuffle=False, verbose=0)
        model.fit(x, y, epochs=10, callbacks=[autolr, trace, recorder], **fit)
        return trace.values, [
            logs["learning_rate"] for logs in recorder.batch_logs
        ]

    options = dict(epochs=10, verbose=0, min_lr=1e-4, max_lr=10.0)
    reused = AutoLR(backup_dir=backup, **options)
    run(reused)
    first_events = reused.controller.events
    (backup / "autolr-epoch-000099.json").write_text("{}")  # Stale.
    with pytest.warns(RuntimeWarning, match="starts a new schedule"):
        again = run(reused)
    fresh = run(AutoLR(**options))
    assert again == fresh
    assert again[1][0] == pytest.approx(1e-4)
    assert reused.controller.steps == 200
    assert reused.controller.events == first_events  # Same model and data.
    # The earlier run's states are gone; this run's last three are there.
    assert sorted(p.name for p in backup.glob("*.json")) == [
        f"autolr-epoch-{e:06d}.json" for e in (8, 9, 10)
    ]


@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_history_keeps_autolr_phase_as_ints():
    """Warmup to the cap (19 steps of 48, in the 2nd epoch of 16 steps),
    on a ramp too low to end it earlier."""
    x, y = support.digits(512)
    model = support.digits_mlp(hidden=())
    autolr = AutoLR(verbose=0, max_lr=1e-2, patience=1000)
    history = model.fit(
        x, y, batch_size=32, epochs=3, verbose=0, callbacks=[autolr]
    )
    assert autolr.controller.switch_event["reason"] == "cap"
    assert autolr.controller.switch_step == 19
    phases = history.history["autolr_phase"]
    assert phases == [0, 1, 1]
    assert [type(phase) for phase in phases] == [int] * 3
