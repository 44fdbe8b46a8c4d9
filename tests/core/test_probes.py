import json
import math

import numpy as np
import pytest

from keras_autolr.core import probes
from keras_autolr.core.controller import AutoLRController


def test_probe_lrs_are_half_a_decade_apart_below_the_highest_lr_run():
    lrs = probes.probe_lrs(0.01, ceiling=1.0, count=4, min_lr=1e-4)
    np.testing.assert_allclose(lrs, [0.01 * 10**0.5, 0.01, 10**-2.5, 1e-3])
    # The ramp ran only up to 0.02: nothing above it is tried.
    lrs = probes.probe_lrs(0.01, ceiling=0.02, count=3, min_lr=1e-4)
    np.testing.assert_allclose(lrs, [0.02, 0.02 / 10**0.5, 0.002])
    # None below the ramp's start.
    assert probes.probe_lrs(3e-4, 1.0, 4, min_lr=1e-4) == pytest.approx(
        [3e-4 * 10**0.5, 3e-4]
    )


def test_probe_steps_are_a_share_of_the_budget_on_the_chunk_grid():
    assert probes.probe_steps(2000, unit=1) == (40, 20)
    assert probes.probe_steps(2000, unit=8) == (40, 24)
    assert probes.probe_steps(100, unit=1) == (probes.MIN_STEPS, 8)
    assert probes.probe_steps(100, unit=32) == (32, 32)


def test_score_is_the_mean_and_standard_error_of_the_last_losses():
    losses = np.array([9.0, 9.0, 9.0, 2.0, 1.0, 3.0])
    mean, se = probes.score(losses, last=3)
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(np.std([2.0, 1.0, 3.0], ddof=1) / math.sqrt(3))
    assert probes.score(losses, last=0) == (math.inf, math.inf)
    assert probes.score(np.array([1.0, np.nan, 1.0, 1.0]), last=2) == (
        math.inf,
        math.inf,
    )


def test_a_smaller_lr_replaces_the_choice_only_when_clearly_lower():
    assert not probes.clearly_lower((0.99, 0.01), (1.0, 0.01))
    assert probes.clearly_lower((0.9, 0.01), (1.0, 0.01))
    assert probes.clearly_lower((5.0, 1.0), (math.inf, math.inf))
    assert not probes.clearly_lower((math.inf, math.inf), (1.0, 0.01))


def run_quadratic(total_steps, best_lr, seed=0, crash_at=None, **options):
    """A controller driving noisy gradient descent on a quadratic whose
    stable LR ends at 2 / curvature; the test does what the Keras callback
    does with the weights at each probe's end."""
    rng = np.random.default_rng(seed)
    curvature = 1.0 / best_lr
    ctl = AutoLRController(total_steps, background=False, **options)
    x, base, choice = 3.0, None, None
    ctl.fed = []
    while ctl.steps < total_steps:
        lr = ctl.lr
        noise = 0.05 * rng.standard_normal()
        loss = 0.5 * curvature * x * x + noise
        if crash_at is not None and ctl.steps == crash_at:
            loss = math.nan
        x -= lr * (curvature * x + noise)
        ctl.fed.append(loss)
        report = ctl.update(loss)
        if report.switch is not None and report.probe_end is not None:
            base = x
        event = report.probe
        if event is not None:
            if event["then"] == "next":
                choice = x if event["chosen"] else choice
                x = base
            elif event["then"] == "choice":
                x = choice
            elif event["then"] == "base":
                x = base
    return ctl


def test_the_controller_lands_at_the_probe_whose_loss_fell_furthest():
    ctl = run_quadratic(2000, best_lr=0.02, probes=4)
    switch = ctl.switch_event
    found = [e for e in ctl.events if e["event"] == "probe"]
    assert [e["lr"] for e in found] == switch["probe_lrs"]
    hold, anneal = switch["probe_steps"]
    assert (hold, anneal) == (40, 20)
    length = hold + anneal
    assert [e["step"] for e in found] == [
        switch["step"] + length * (i + 1) for i in range(len(found))
    ]
    # The choice rule, from the events: largest first, replaced only by a
    # clearly lower loss.
    choice = None
    for e in found:
        score = (e["loss"] or math.inf, e["se"] or math.inf)
        if choice is None or probes.clearly_lower(score, choice[1]):
            choice = (e["lr"], score)
    assert ctl.landing_lr == choice[0] == switch["peak_lr"]
    assert found[-1]["landing_lr"] == choice[0]
    # The decay starts at the end of the probes from the chosen LR, each
    # probe held its LR over its steps.
    end = found[-1]["step"]
    assert ctl.decay_start == end and ctl.lr_at(end) == choice[0]
    for e in found:
        assert ctl.lr_at(e["step"] - length) == e["lr"]
        assert ctl.lr_at(e["step"] - anneal - 1) == e["lr"]
        assert ctl.lr_at(e["step"] - 1) == pytest.approx(e["lr"] / anneal)
    assert ctl.lr_at(ctl.total_steps) == 0.0


def test_a_non_finite_loss_ends_its_probe_at_once_and_is_never_chosen():
    plain = run_quadratic(2000, best_lr=0.02, probes=4)
    start = plain.switch_event["step"]
    ctl = run_quadratic(2000, best_lr=0.02, probes=4, crash_at=start + 5)
    found = [e for e in ctl.events if e["event"] == "probe"]
    assert found[0]["step"] == start + 6 and found[0]["loss"] is None
    assert not found[0]["chosen"]
    assert ctl.landing_lr != found[0]["lr"]
    assert not ctl.rescues


@pytest.mark.filterwarnings("ignore:AutoLR. the loss climbed:RuntimeWarning")
def test_probes_are_skipped_when_the_budget_cannot_hold_them():
    # Four probes of 24 steps need 384 steps left after the switch.
    ctl = run_quadratic(150, best_lr=0.02, probes=4, min_bins=4)
    assert ctl.switch_event is not None
    assert "probe_lrs" not in ctl.switch_event
    assert not [e for e in ctl.events if e["event"] == "probe"]


def test_a_controller_restored_mid_probe_decides_as_the_uninterrupted_one():
    total = 2000
    ctl = run_quadratic(total, best_lr=0.02, probes=4)
    middle = ctl.switch_event["step"] + 75  # Inside the second probe.
    replay = AutoLRController(total, probes=4, background=False)
    for loss in ctl.fed[:middle]:
        replay.update(loss)
    assert replay.report().probe_end == ctl.switch_event["step"] + 120
    resumed = AutoLRController.from_state(
        json.loads(json.dumps(replay.get_state()))
    )
    for loss in ctl.fed[middle:]:
        resumed.update(loss)
    assert resumed.events == ctl.events
    steps = np.arange(total)
    np.testing.assert_array_equal(resumed.lr_at(steps), ctl.lr_at(steps))


def test_probes_need_a_non_negative_count():
    with pytest.raises(ValueError, match="probes=-1"):
        AutoLRController(1000, probes=-1)
