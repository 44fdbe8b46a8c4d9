import json
import math

import numpy as np
import pytest

from keras_autolr.core import schedule

STEPS = np.arange(0, 1001, dtype=np.float64)


def test_exponential_ramp_matches_formula_and_endpoints():
    lr = schedule.exponential_ramp(STEPS, 1e-5, 1.0, 1000)
    np.testing.assert_allclose(lr, 1e-5 * (1e5 ** (STEPS / 1000)), rtol=1e-12)
    assert lr[0] == pytest.approx(1e-5, rel=1e-12)
    assert lr[-1] == pytest.approx(1.0, rel=1e-12)
    assert np.all(np.diff(lr) > 0)
    # Geometric: a constant ratio between consecutive steps.
    np.testing.assert_allclose(lr[1:] / lr[:-1], 1e5 ** (1 / 1000))


def test_linear_ramp_matches_formula_and_endpoints():
    lr = schedule.linear_ramp(STEPS, 1e-3, 0.5, 1000)
    np.testing.assert_allclose(lr, 1e-3 + (0.5 - 1e-3) * STEPS / 1000)
    assert lr[0] == 1e-3
    assert lr[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(np.diff(lr), (0.5 - 1e-3) / 1000)


def test_cosine_decay_formula_endpoints_and_monotonicity():
    steps = np.arange(100, 501, dtype=np.float64)
    lr = schedule.cosine_decay(steps, 0.2, 100.0, 500.0)
    expected = 0.2 * 0.5 * (1 + np.cos(np.pi * (steps - 100) / 400))
    np.testing.assert_allclose(lr, expected, rtol=1e-12, atol=1e-18)
    assert lr[0] == 0.2
    assert lr[-1] == 0.0
    assert np.all(np.diff(lr) <= 0)
    # Clamped outside [start, end].
    assert schedule.cosine_decay(50.0, 0.2, 100.0, 500.0) == 0.2
    assert schedule.cosine_decay(900.0, 0.2, 100.0, 500.0) == 0.0


def test_linear_decay_formula_endpoints_and_constant_slope():
    steps = np.arange(100, 501, dtype=np.float64)
    lr = schedule.linear_decay(steps, 0.2, 100.0, 500.0)
    np.testing.assert_allclose(lr, 0.2 * (500 - steps) / 400, rtol=1e-12)
    assert lr[0] == 0.2
    assert lr[-1] == 0.0
    np.testing.assert_allclose(np.diff(lr), -0.2 / 400, rtol=1e-9)
    # Clamped outside [start, end].
    assert schedule.linear_decay(50.0, 0.2, 100.0, 500.0) == 0.2
    assert schedule.linear_decay(900.0, 0.2, 100.0, 500.0) == 0.0


def test_constant_cosine_holds_then_cools_down():
    steps = np.arange(100, 1001, dtype=np.float64)
    lr = schedule.constant_cosine_decay(steps, 0.3, 100.0, 1000.0, 200.0)
    hold = steps <= 800
    np.testing.assert_array_equal(lr[hold], 0.3)
    cool = steps[~hold]
    expected = 0.3 * 0.5 * (1 + np.cos(np.pi * (cool - 800) / 200))
    np.testing.assert_allclose(lr[~hold], expected, rtol=1e-12, atol=1e-18)
    assert lr[-1] == 0.0
    # A switch inside the cooldown window starts the cosine at the switch.
    late = schedule.constant_cosine_decay(
        np.array([900.0, 950.0, 1000.0]), 0.3, 900.0, 1000.0, 200.0
    )
    np.testing.assert_allclose(late, [0.3, 0.15, 0.0], atol=1e-15)


@pytest.mark.parametrize("warmup", ["exponential", "linear"])
@pytest.mark.parametrize("decay", schedule.DECAYS)
def test_autolr_joins_ramp_and_decay_at_the_switch(warmup, decay):
    kw = dict(
        warmup=warmup,
        decay_kind=decay,
        min_lr=1e-4,
        max_lr=1.0,
        ramp_steps=500.0,
        total_steps=1000.0,
        cooldown_steps=200.0,
    )
    steps = np.arange(0, 1101, dtype=np.float64)
    lr = schedule.autolr(steps, switch_step=300.0, peak_lr=0.01, **kw)
    ramp = schedule.ramp(warmup, steps, 1e-4, 1.0, 500.0)
    dec = schedule.decay(decay, steps, 0.01, 300.0, 1000.0, 200.0)
    np.testing.assert_array_equal(lr[:300], ramp[:300])
    np.testing.assert_array_equal(lr[300:1001], dec[300:1001])
    assert lr[300] == pytest.approx(0.01)
    assert lr[1000] == 0.0
    np.testing.assert_array_equal(lr[1000:], 0.0)
    assert np.all(np.diff(lr[300:]) <= 0)
    assert np.all(np.diff(lr[:300]) > 0)


@pytest.mark.parametrize("warmup", schedule.WARMUPS)
def test_warmup_lr_is_the_ramp_held_at_max_lr_from_ramp_steps(warmup):
    kw = dict(min_lr=1e-5, max_lr=1.0, ramp_steps=1000.0)
    steps = np.arange(0, 1501, dtype=np.float64)
    lr = schedule.warmup_lr(warmup, steps, **kw)
    ramp = schedule.ramp(warmup, steps, 1e-5, 1.0, 1000.0)
    np.testing.assert_array_equal(lr[:1001], ramp[:1001])
    np.testing.assert_allclose(lr[1000:], 1.0, rtol=1e-12)


def test_autolr_restarted_decay():
    kw = dict(
        warmup="exponential",
        decay_kind="cosine",
        min_lr=1e-5,
        max_lr=1.0,
        ramp_steps=500.0,
        total_steps=1000.0,
        cooldown_steps=200.0,
    )
    steps = np.arange(0, 1001, dtype=np.float64)
    lr = schedule.autolr(
        steps,
        switch_step=300.0,
        peak_lr=0.01,
        decay_start=600.0,
        **kw,
    )
    warm = schedule.warmup_lr(
        "exponential",
        steps,
        min_lr=1e-5,
        max_lr=1.0,
        ramp_steps=500.0,
    )
    np.testing.assert_array_equal(lr[:300], warm[:300])
    # After the switch: the cosine that starts at `decay_start`.
    np.testing.assert_allclose(lr[300:601], 0.01, rtol=1e-12)
    dec = schedule.cosine_decay(steps, 0.01, 600.0, 1000.0)
    np.testing.assert_array_equal(lr[600:], dec[600:])
    assert lr[1000] == 0.0


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="warmup 'cubic'"):
        schedule.ramp("cubic", 0.0, 1e-5, 1.0, 10.0)
    with pytest.raises(ValueError, match="decay 'step'"):
        schedule.decay("step", 0.0, 1.0, 0.0, 10.0, 2.0)


def test_cosine_half_point():
    assert schedule.cosine_decay(50.0, 1.0, 0.0, 100.0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi / 2))
    )


def test_scalar_namespace_matches_numpy():
    kw = dict(
        switch_step=300.0,
        peak_lr=0.01,
        warmup="exponential",
        decay_kind="constant_cosine",
        min_lr=1e-5,
        max_lr=1.0,
        ramp_steps=500.0,
        total_steps=1000.0,
        cooldown_steps=200.0,
    )
    steps = np.arange(0, 1010, 7, dtype=np.float64)
    vector = schedule.autolr(steps, **kw)
    scalar = [
        schedule.autolr(float(s), xp=schedule.SCALAR, **kw) for s in steps
    ]
    np.testing.assert_allclose(scalar, vector, rtol=1e-14, atol=0)


def make_decisions():
    shape = schedule.Shape(
        warmup="exponential",
        decay="linear",
        min_lr=1e-4,
        max_lr=1.0,
        ramp_steps=400.0,
        total_steps=1000.0,
        cooldown_steps=200.0,
    )
    return schedule.Decisions(shape, cap=400, max_lr=1.0)


def test_decisions_land_restart_and_count_their_revisions():
    decisions = make_decisions()
    # Until a decision: the cap, at the ramp's LR there.
    assert (decisions.switch_step, decisions.landing_lr) == (400, 1.0)
    assert decisions.max_lr == 1.0 and decisions.revision == 0
    assert decisions.decay_start == 400 and decisions.decay_lr == 1.0
    decisions.set_landing(0.02)  # Provisional: warmup goes on.
    decisions.set_landing(0.02)  # No change, no revision.
    assert decisions.landing_lr == 0.02 and decisions.revision == 1
    assert decisions.switch_step == 400
    decisions.switch(250, 0.01)
    assert (decisions.decay_start, decisions.decay_lr) == (250, 0.01)
    assert decisions.lr_at(250) == 0.01 and decisions.revision == 2
    decisions.restart(600, 0.003)
    assert (decisions.decay_start, decisions.decay_lr) == (600, 0.003)
    assert decisions.landing_lr == 0.01 and decisions.revision == 3
    assert decisions.lr_at(600) == pytest.approx(0.003, rel=1e-12)
    assert decisions.max_lr == 1.0  # The cap's landing, kept for reset.
    decisions.reset()
    assert (decisions.switch_step, decisions.landing_lr) == (400, 1.0)


def test_decisions_state_keeps_the_0_2_keys_and_round_trips():
    decisions = make_decisions()
    decisions.switch(250, 0.01)
    decisions.restart(600, 0.003)
    state = json.loads(json.dumps(decisions.get_state()))
    # The names of saved states are those of release 0.2 (`peak_lr`).
    assert state == {
        "switch_step": 250,
        "peak_lr": 0.01,
        "restarts": [[600, 0.003]],
        "revision": 2,
    }
    clone = make_decisions()
    clone.set_state(state)
    steps = np.arange(1001)
    np.testing.assert_array_equal(clone.lr_at(steps), decisions.lr_at(steps))
    assert clone.get_state() == decisions.get_state()
