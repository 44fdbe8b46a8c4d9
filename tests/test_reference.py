"""`AutoLRController.reference` / `AutoLR.reference`: the AutoWU paper's
setting, checked against a direct re-implementation of its procedure."""

import json
import math

import numpy as np
import pytest
import support

from keras_autolr.core import options, warmup
from keras_autolr.core.controller import AutoLRController
from keras_autolr.core.gp import MinimumDetector

SPE = 50  # Steps per epoch.
EPOCHS = 40  # Cap: 20 epochs, 1,000 steps, five decades from 1e-5.
NOISE = 0.05


def u_loss(lr, best):
    return 1.0 + 0.3 * math.log10(lr / best) ** 2


def closed_loop(ctl, best, seed):
    """Drives `ctl` until warmup ends: each step's loss is that of the LR
    the controller returned, plus the step's noise (a fixed array, so an
    open-loop replay sees the same stream). Returns the losses fed."""
    noise = NOISE * np.random.default_rng(seed).normal(size=ctl.total_steps)
    losses = []
    lr = ctl.lr
    while ctl.phase == "warmup":
        losses.append(u_loss(lr, best) + noise[len(losses)])
        lr = ctl.step(losses[-1])
    return np.asarray(losses), noise


def paper_switch(best, noise, seed=0):
    """The AutoWU reference's procedure, written out: the LR grows
    geometrically from 1e-5 to 1.0 over half the budget; at the end of each
    epoch every loss so far is tested (x = step / steps, the test's index
    as the key of its subsamples), and the third positive test in a row
    ends warmup at once, at the mean LR of the posterior-mean minima
    (geometric interpolation from 1e-5 to the LR of the last step).
    Returns `(switch step, peak LR)`, or `None` if the cap comes first."""
    ramp = EPOCHS * SPE // 2
    steps = np.arange(ramp, dtype=np.float64)
    lrs = 1e-5 * (1.0 / 1e-5) ** (steps / ramp)
    losses = np.array([u_loss(lr, best) for lr in lrs]) + noise[:ramp]
    detector = MinimumDetector(seed=seed)
    votes = []
    for epoch in range(1, ramp // SPE):
        n = epoch * SPE
        x = (np.arange(n) + 0.5) / n
        result = detector.test(x, losses[:n], key=epoch - 1)
        votes.append(result.past_minimum)
        if votes[-3:] == [True] * 3:
            current = lrs[n - 1]
            at_minima = 1e-5 * (current / 1e-5) ** np.asarray(result.minimum_x)
            return n, float(np.mean(at_minima))
    return None


CASES = [(1e-2, 0), (3e-3, 1), (1e-2, 2), (3e-2, 3), (1e-3, 4), (5e-3, 5)]


@pytest.mark.parametrize("best, seed", CASES)
def test_switches_at_the_epoch_where_the_paper_does(best, seed):
    ctl = AutoLRController.reference(EPOCHS * SPE, SPE, background=False)
    losses, noise = closed_loop(ctl, best, seed)
    expected = paper_switch(best, noise)
    assert expected is not None
    step, peak = expected
    (event,) = ctl.events
    assert event["reason"] == "minimum"
    assert event["step"] == ctl.switch_step == step
    assert step % SPE == 0
    # The LR rolled back to the paper's: the package maps a minimum at x
    # to the ramp's LR at x * steps, the paper to x * (steps - 1).
    assert ctl.landing_lr == pytest.approx(peak, rel=0.02)
    assert ctl.lr_at(step) == pytest.approx(ctl.landing_lr)
    # After the true minimum, within a few epochs of it.
    best_step = 1000 * math.log10(best / 1e-5) / 5
    assert best_step < step < best_step + 8 * SPE
    assert 0.5 < ctl.landing_lr / best < 2.0


@pytest.mark.parametrize("best, seed", CASES[:3])
def test_acting_one_test_later_switches_one_epoch_late(best, seed):
    at_once = AutoLRController.reference(EPOCHS * SPE, SPE, background=False)
    closed_loop(at_once, best, seed)
    later = AutoLRController.reference(
        EPOCHS * SPE, SPE, background=False, act_at_once=False
    )
    closed_loop(later, best, seed)
    assert later.switch_step == at_once.switch_step + SPE
    # The same test decided: same smoothed minimum, same LR to land at.
    assert later.landing_lr == at_once.landing_lr


def test_the_worker_thread_changes_no_decision():
    runs = []
    for background in (True, False):
        ctl = AutoLRController.reference(
            EPOCHS * SPE, SPE, background=background
        )
        closed_loop(ctl, 1e-2, seed=7)
        runs.append(ctl.get_state())
    assert runs[0] == runs[1]


def test_the_gp_vote_alone_decides():
    """No filter: the GP runs at every test, from the first epoch on, on
    the raw losses (a plateau that has not fallen is tested too)."""
    ctl = AutoLRController.reference(EPOCHS * SPE, SPE, background=False)
    rng = np.random.default_rng(0)
    for _ in range(5 * SPE):
        ctl.step(2.3 + 0.01 * rng.normal())
    assert ctl.tests_run == ctl.detector_runs == 5
    centers, means, counts = ctl.loss_bins()
    detector = support.detector_of(ctl)
    outcome = warmup.minimum_test(
        detector, centers, means, counts, 250, SPE, False, 4, False
    )
    expected = detector.test(centers / 250, means, counts, key=4)
    assert outcome.probabilities == expected.probabilities
    assert outcome.votes == expected.past_minimum
    assert ctl.last_probability == pytest.approx(
        np.mean(expected.probabilities)
    )


def test_settings_and_overrides():
    ctl = AutoLRController.reference(9000, 100)
    config = ctl.get_config()
    for key, value in options.AUTOWU.items():
        assert config[key] == value, key
    assert config["check_every"] == 100
    assert config["bin_steps"] == 1
    assert config["smoother"] == "numpy"
    assert ctl.ramp_steps == 4500
    assert ctl.first_test_step == 100
    other = AutoLRController.reference(9000, 100, patience=2, filters=True)
    assert (
        other.settings.patience == 2
        and other.settings.filters
        and other.settings.act_at_once
    )
    # The defaults are unchanged.
    default = AutoLRController(9000).get_config()
    assert (default["act_at_once"], default["filters"]) == (False, True)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        AutoLRController.reference(9000, 0)
    with pytest.raises(TypeError, match="Unrecognized.*'wrong'"):
        AutoLRController.reference(9000, 100, wrong=1)


def test_state_round_trip_keeps_the_setting():
    ctl = AutoLRController.reference(EPOCHS * SPE, SPE, background=False)
    rng = np.random.default_rng(3)
    lr = ctl.lr
    for _ in range(7 * SPE + 10):
        lr = ctl.step(u_loss(lr, 1e-2) + NOISE * rng.normal())
    state = json.loads(json.dumps(ctl.get_state()))
    assert state["config"]["act_at_once"] is True
    assert state["warmup"]["pending"] is None  # Nothing waits.
    clone = AutoLRController.from_state(state)
    assert clone.get_config() == ctl.get_config()
    for _ in range(600):
        loss = u_loss(lr, 1e-2) + NOISE * rng.normal()
        lr = ctl.step(loss)
        assert clone.step(loss) == lr
    assert clone.events == ctl.events
    with pytest.raises(ValueError, match="act_at_once"):
        AutoLRController(EPOCHS * SPE).set_state(state)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"act_at_once": 1}, "act_at_once"),
        ({"filters": "no"}, "filters"),
        ({"smoother": "torch"}, "smoother"),
    ],
)
def test_bad_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=f"Argument `{match}`"):
        AutoLRController(1000, **kwargs)


def test_plot_draws_the_posterior_the_test_saw():
    import keras_autolr

    ctl = AutoLRController.reference(EPOCHS * SPE, SPE, background=False)
    closed_loop(ctl, 1e-2, seed=0)
    figure = keras_autolr.plot(ctl)
    loss_axes = figure.axes[1]
    (mean_line,) = [
        line
        for line in loss_axes.get_lines()
        if line.get_label() == "GP posterior mean"
    ]
    centers, means, counts = ctl.loss_bins()
    warm = centers < ctl.switch_step
    # Raw means, one noise level: what a test with `filters=False` sees.
    expected = support.detector_of(ctl).posterior(
        centers[warm] / ctl.switch_step, means[warm], counts[warm]
    )
    np.testing.assert_allclose(mean_line.get_ydata(), expected.mean)
    assert "detected at step" in figure.axes[0].get_title(loc="left")


def test_callback_reference(tmp_path):
    import keras
    from support import digits, digits_mlp

    from keras_autolr import AutoLR

    autolr = AutoLR.reference(epochs=6, verbose=0)
    config = autolr.get_config()
    assert config["check_every"] == "epoch"
    assert config["restore_weights"] is False
    assert config["act_at_once"] is True and config["filters"] is False
    assert config["min_lr"] == 1e-5 and config["decay"] == "constant_cosine"
    assert AutoLR.from_config(config).get_config() == config
    assert AutoLR.reference(verbose=0, patience=2).get_config()["patience"] == 2
    x, y = digits(512)
    model = digits_mlp(optimizer=keras.optimizers.SGD(momentum=0.9))
    model.fit(x, y, batch_size=32, epochs=6, callbacks=[autolr], verbose=0)
    ctl = autolr.controller
    assert (
        ctl.settings.check_every == 16
        and ctl.settings.act_at_once
        and not ctl.settings.filters
    )
    # Tests ran at the end of each epoch of warmup (16 steps).
    assert ctl.tests_run == ctl.switch_step // 16
    assert ctl.switch_step % 16 == 0
