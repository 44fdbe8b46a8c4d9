"""Warmup whose best LR is near the ramp's start: the loss barely falls,
then rises clearly, and that rise ends warmup (a loss that never fell by 8
noise std used to leave the ramp to climb to the cap)."""

import math

import numpy as np
import pytest

from keras_autolr import AutoLRController
from keras_autolr.core import warmup
from keras_autolr.core.gp import MinimumDetector


def run(seed, decades=0.7, noise=0.1, total=1000):
    """A closed loop on a U in log10 LR, minimum `decades` above
    `min_lr`; returns the controller and the highest LR run."""
    ctl = AutoLRController(total_steps=total)
    rng = np.random.default_rng(seed)
    best = math.log10(ctl.settings.min_lr) + decades
    lr, top = ctl.lr, 0.0
    while ctl.phase == "warmup":
        top = max(top, lr)
        loss = 1.0 + (math.log10(lr) - best) ** 2 + noise * rng.normal()
        lr = ctl.step(loss)
    return ctl, top, 10.0**best


@pytest.mark.parametrize("seed", range(6))
def test_a_clear_rise_ends_warmup_long_before_the_cap(seed):
    ctl, top, best_lr = run(seed)
    event = ctl.switch_event
    assert event["reason"] in ("minimum", "overshoot")
    assert event["step"] < 0.5 * ctl.ramp_steps
    # The ramp stops within a decade of the minimum (it reached 0.98, about
    # 2,000x, at the cap), and lands near the minimum's LR.
    assert top < 10.0 * best_lr
    assert 0.3 * best_lr < ctl.landing_lr < 1.5 * best_lr


def test_the_loss_did_not_fall_clearly_there():
    # The premise: on this curve the filters see no clear fall.
    rng = np.random.default_rng(1)
    steps = np.arange(200)
    lr = 1e-4 * 10.0 ** (steps / 100)
    best = math.log10(1e-4) + 0.7
    raw = 1.0 + (np.log10(lr) - best) ** 2 + 0.1 * rng.normal(size=200)
    means, noise, _ = warmup.stats.detector_inputs(raw)
    assert not warmup.stats.progress(means).fell_clearly
    assert warmup.stats.rise(means, noise) > warmup.CLEAR_RISE
    outcome = warmup.minimum_test(
        MinimumDetector(),
        steps + 0.5,
        raw,
        np.ones(200),
        now=200,
        check_every=4,
        at_cap=False,
        key=0,
    )
    assert outcome.ran and outcome.rise > warmup.CLEAR_RISE


def test_a_flat_noisy_loss_is_no_clear_rise():
    rng = np.random.default_rng(0)
    raw = 1.0 + 0.1 * rng.normal(size=300)
    means, noise, _ = warmup.stats.detector_inputs(raw)
    assert warmup.stats.rise(means, noise) < warmup.CLEAR_RISE
    outcome = warmup.minimum_test(
        MinimumDetector(),
        np.arange(300) + 0.5,
        raw,
        np.ones(300),
        now=300,
        check_every=3,
        at_cap=False,
        key=0,
    )
    assert not outcome.ran
