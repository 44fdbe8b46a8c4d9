"""What a user meets before, during and after a `fit` with AutoLR: the
optimizer left as compiled, short budgets, other LR setters, a fit that
ends early or starts over, the printed lines, and the schedule found."""

import re
import warnings

import keras
import numpy as np
import pytest
import support

from keras_autolr import AutoLR

BATCH = 64
STEPS = 16  # Steps per epoch of support.digits() at batch 64.
# Rescue-free runs on every backend: an LR range that does not blow the MLP
# up.
QUIET = {"verbose": 0, "max_lr": 0.1}


def fit(model, autolr, epochs=3, n=None, callbacks=(), **kwargs):
    x, y = support.digits(n=1797)
    x, y = x[: STEPS * BATCH], y[: STEPS * BATCH]
    if n is not None:
        x, y = support.digits(n=1797)
        x, y = x[: n * BATCH], y[: n * BATCH]
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[autolr, *callbacks],
        **kwargs,
    )


def lr_variable(model):
    return float(keras.ops.convert_to_numpy(model.optimizer._learning_rate))


class LRs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.lrs = []

    def on_train_batch_end(self, batch, logs=None):
        self.lrs.append(logs["learning_rate"])


def test_the_optimizer_keeps_its_compiled_lr_and_a_later_fit_trains():
    model = support.digits_mlp(optimizer=keras.optimizers.Adam(0.003))
    fit(model, AutoLR(**QUIET), epochs=2)
    assert lr_variable(model) == pytest.approx(0.003, rel=1e-6)
    before = [w.copy() for w in model.get_weights()]
    history = fit(model, keras.callbacks.Callback(), epochs=1)
    after = model.get_weights()
    pairs = zip(before, after, strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)
    assert np.isfinite(history.history["loss"][0])


def test_an_early_stop_leaves_the_compiled_lr():
    model = support.digits_mlp(optimizer=keras.optimizers.Adam(0.002))

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 5:
                self.model.stop_training = True

    fit(model, AutoLR(epochs=4, **QUIET), epochs=4, callbacks=[Stop()])
    assert lr_variable(model) == pytest.approx(0.002, rel=1e-6)


class Interrupted(keras.Sequential):
    """Raises KeyboardInterrupt in its 6th train step (eager)."""

    calls = 0

    def train_step(self, *args, **kwargs):
        Interrupted.calls += 1
        if Interrupted.calls == 6:
            raise KeyboardInterrupt
        return super().train_step(*args, **kwargs)


def test_an_interrupted_fit_leaves_the_compiled_lr():
    keras.utils.set_random_seed(0)
    model = Interrupted(
        [keras.Input((64,)), keras.layers.Dense(16), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.004),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    with pytest.raises(KeyboardInterrupt):
        fit(model, AutoLR(epochs=2, **QUIET), epochs=2)
    assert lr_variable(model) == pytest.approx(0.004, rel=1e-6)
    assert "_get_current_learning_rate" not in vars(model.optimizer)


@pytest.mark.parametrize("steps", [4, 10, 20])
def test_a_short_budget_warns_once_and_never_exceeds_the_ramp(steps):
    model = support.digits_mlp()
    lrs = LRs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, AutoLR(**QUIET), epochs=1, n=steps, callbacks=[lrs])
    texts = [str(w.message) for w in caught if "budget of" in str(w.message)]
    assert len(texts) == 1
    assert f"budget of {steps} steps" in texts[0]
    assert re.search(r"the (\d+) steps its tests need", texts[0])
    assert len(lrs.lrs) == steps
    ramp_top = max(lrs.lrs[: np.argmax(lrs.lrs) + 1])
    # After the peak of the ramp, no LR above half of it.
    peak = int(np.argmax(lrs.lrs))
    assert all(lr <= 0.5 * ramp_top + 1e-12 for lr in lrs.lrs[peak + 1 :])


@pytest.mark.parametrize(
    "other",
    [
        lambda: keras.callbacks.ReduceLROnPlateau(verbose=1),
        lambda: keras.callbacks.LearningRateScheduler(lambda e, lr: lr),
    ],
)
def test_another_lr_setter_is_refused_at_fit_start(other):
    model = support.digits_mlp()
    callback = other()
    with pytest.raises(ValueError, match=type(callback).__name__):
        fit(model, AutoLR(**QUIET), epochs=1, callbacks=[callback])
    assert "_get_current_learning_rate" not in vars(model.optimizer)
    assert lr_variable(model) == pytest.approx(0.001, rel=1e-6)


def test_a_callback_writing_the_lr_gets_a_warning():
    class Writer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.learning_rate = 0.0123

    model = support.digits_mlp()
    with pytest.warns(RuntimeWarning, match="0.0123") as caught:
        fit(model, AutoLR(**QUIET), epochs=2, callbacks=[Writer()])
    assert sum("0.0123" in str(w.message) for w in caught) == 1


def test_a_fit_shorter_than_the_budget_says_so(capsys):
    fit(support.digits_mlp(), AutoLR(epochs=6, verbose=1, max_lr=0.1), epochs=2)
    out = capsys.readouterr().out
    assert f"fit ended at step {2 * STEPS} of its budget of {6 * STEPS}" in out
    assert "AutoLR: " in out.splitlines()[-1]


def test_a_second_fit_from_epoch_0_warns():
    model = support.digits_mlp()
    autolr = AutoLR(**QUIET)
    fit(model, autolr, epochs=2)
    with pytest.warns(RuntimeWarning, match="starts a new schedule"):
        fit(model, autolr, epochs=2)


def test_a_resume_whose_budget_changed_names_the_cause():
    model = support.digits_mlp()
    autolr = AutoLR(**QUIET)  # Budget: fit's epochs.
    fit(model, autolr, epochs=2)
    with pytest.raises(ValueError, match="budget changed from 32 steps"):
        fit(model, autolr, epochs=4, initial_epoch=2)


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_prints_the_switch_with_plain_lrs(verbose, capsys):
    autolr = AutoLR(verbose=verbose, max_lr=0.1)
    fit(support.digits_mlp(), autolr, epochs=4)
    out = capsys.readouterr().out
    event = autolr.controller.switch_event
    assert event is not None
    assert f"warmup ended at step {event['step']}" in out
    assert f"decay from {event['peak_lr']:.3g}" in out
    assert "LR at the loss minimum" in out
    assert "peak LR" not in out


def test_verbose_3_is_refused():
    with pytest.raises(ValueError, match="verbose=3"):
        AutoLR(verbose=3)


def test_phase_logs_as_an_integer():
    history = fit(support.digits_mlp(), AutoLR(**QUIET), 3)
    phases = history.history["autolr_phase"]
    assert all(type(p) is int for p in phases)
    assert phases[-1] == 1


def test_the_summary_matches_the_run():
    autolr = AutoLR(**QUIET)
    fit(support.digits_mlp(), autolr, epochs=4)
    ctl, summary = autolr.controller, autolr.summary
    event = ctl.switch_event
    assert summary["switch_step"] == event["step"] == ctl.switch_step
    assert summary["reason"] == event["reason"]
    assert summary["landing_lr"] == event["peak_lr"]
    assert summary["highest_lr"] == pytest.approx(
        float(ctl.lr_at(ctl.switch_step - 1))
    )
    assert summary["highest_lr"] > summary["landing_lr"]
    assert summary["rescues"] == ctl.rescues
    assert summary["steps"] == 4 * STEPS


def test_the_found_schedule_repeats_the_decay_and_round_trips():
    autolr = AutoLR(**QUIET)
    fit(support.digits_mlp(), autolr, epochs=4)
    ctl = autolr.controller
    assert not ctl.rescues, "this run needs no rescue for an exact match"
    found = autolr.found_schedule()
    steps = np.arange(ctl.switch_step, ctl.total_steps + 2)
    expected = ctl.lr_at(steps.astype("float64"))
    got = [float(found(int(s))) for s in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    # During warmup: the ramp, held at the landing LR.
    warm = [float(found(s)) for s in range(ctl.switch_step)]
    ramp = [
        min(float(ctl.ramp_lr_at(s)), ctl.landing_lr)
        for s in range(ctl.switch_step)
    ]
    np.testing.assert_allclose(warm, ramp, rtol=1e-5)
    config = keras.optimizers.schedules.serialize(found)
    again = keras.optimizers.schedules.deserialize(config)
    assert again.get_config() == found.get_config()
    # Stretched to twice the budget: the switch at twice the step.
    longer = autolr.found_schedule(total_steps=2 * ctl.total_steps)
    assert float(longer(2 * ctl.switch_step)) == pytest.approx(
        ctl.landing_lr, rel=1e-5
    )
    # A fit without AutoLR runs it.
    model = support.digits_mlp(optimizer=keras.optimizers.Adam(found))
    lrs = []

    class Read(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            lrs.append(float(self.model.optimizer.learning_rate))

    fit(model, Read(), epochs=1)
    np.testing.assert_allclose(lrs, warm[:STEPS], rtol=1e-5)


def test_found_schedule_before_the_switch_is_an_error():
    autolr = AutoLR(epochs=50, **QUIET)
    fit(support.digits_mlp(), autolr, epochs=1)
    with pytest.raises(ValueError, match="warmup has not ended"):
        autolr.found_schedule()
