import math

import numpy as np
import pytest

from keras_autolr import AutoLRController
from keras_autolr.keras.lr_schedule import AutoLRSchedule

NAMES = ("switch_step", "decay_start", "peak_lr")


def spy_on_writes(schedule):
    """Records the name of every schedule variable written."""
    written = []
    for name in NAMES:
        variable = getattr(schedule, name)
        original = variable.assign

        def assign(value, name=name, original=original):
            written.append(name)
            return original(value)

        variable.assign = assign
    return written


def test_sync_writes_only_the_values_that_changed():
    ctl = AutoLRController(total_steps=400, check_every=4)
    schedule = AutoLRSchedule(ctl)
    written = spy_on_writes(schedule)
    rng = np.random.default_rng(0)
    lr, revision = ctl.lr, ctl.revision
    while ctl.revision == revision:  # Until a test moves the peak.
        lr = ctl.step(2.0 - math.log10(lr) / 10 + 0.01 * rng.normal())
    assert ctl.phase == "warmup"
    assert schedule.sync()
    assert written == ["peak_lr"]
    peak = ctl.report().decay_lr
    assert float(schedule.peak_lr.numpy()) == pytest.approx(peak)
    assert not schedule.sync()  # Same revision: nothing to do.
    assert written == ["peak_lr"]
    written.clear()
    assert not schedule.sync(force=True)  # Every value rewritten, unchanged.
    assert sorted(written) == sorted(NAMES)


def test_constants_follow_the_controller_without_variables():
    """The form for JAX, whose compiled step bakes in constants: sync()
    says when a value changed, i.e. when to recompile."""
    ctl = AutoLRController(total_steps=400, check_every=4)
    schedule = AutoLRSchedule(ctl, constants=True)
    assert all(isinstance(getattr(schedule, n), float) for n in NAMES)
    rng = np.random.default_rng(0)
    lr, changes = ctl.lr, 0
    while ctl.phase == "warmup":
        lr = ctl.step(2.0 - math.log10(lr) / 10 + 0.01 * rng.normal())
        changes += schedule.sync(horizon=8)
    assert schedule.switch_step == ctl.switch_step
    assert schedule.peak_lr == ctl.report().decay_lr
    # The provisional peak changed at many tests; the schedule only when
    # the next chunk could reach the cap, and at the switch.
    assert changes in (1, 2, 3) and ctl.tests_run > 3
    # Optimizer step 5 is the controller's next step.
    offset = 5 - ctl.steps
    assert schedule.align(5) and schedule.step_offset == offset
    assert not schedule.align(5)
    np.testing.assert_allclose(
        [float(schedule(s + offset)) for s in range(0, 400, 7)],
        ctl.lr_at(np.arange(0, 400, 7)),
        rtol=1e-6,
        atol=1e-6 * ctl.landing_lr,  # float32 steps, near the end of decay.
    )


def test_the_provisional_peak_is_written_only_before_the_cap():
    """During warmup the peak LR moves at every test, but no step before
    the switch uses it: it is written once the next chunk may reach the
    cap (or a decision ends warmup)."""
    ctl = AutoLRController(total_steps=400, check_every=4)
    schedule = AutoLRSchedule(ctl)
    written = spy_on_writes(schedule)
    rng = np.random.default_rng(0)
    lr, peaks = ctl.lr, []
    while ctl.steps < ctl.switch_step:
        lr = ctl.step(2.0 - math.log10(lr) / 10 + 0.01 * rng.normal())
        schedule.sync(horizon=8)
        peaks.append(float(schedule.peak_lr.numpy()))
        if ctl.steps + 8 >= ctl.switch_step:
            # The next chunk may cross the cap: the device has the peak.
            assert peaks[-1] == pytest.approx(ctl.report().decay_lr)
    assert ctl.switch_event["reason"] == "cap"
    assert ctl.tests_run > 10  # The peak moved many times...
    assert written.count("peak_lr") <= 3  # ...and was written at the end.
    # Every step computes the LR the controller planned.
    np.testing.assert_allclose(
        [float(schedule(s)) for s in range(0, 400, 7)],
        ctl.lr_at(np.arange(0, 400, 7)),
        rtol=1e-6,
        atol=1e-7,  # float32 on the device, near 0 at the end.
    )


def test_align_moves_the_offset_only_when_it_changes():
    ctl = AutoLRController(total_steps=400)
    for _ in range(10):
        ctl.step(1.0)
    schedule = AutoLRSchedule(ctl)
    assert schedule.align(10) is False  # Iterations == steps: offset 0.
    assert schedule.align(7) is True  # Three steps skipped by the optimizer.
    assert schedule.align(7) is False
    written = []
    original = schedule.step_offset.assign
    schedule.step_offset.assign = lambda v: written.append(v) or original(v)
    assert schedule.align(7, force=True) is False  # Rewritten, unchanged.
    assert written == [-3.0]
    # Optimizer step 7 is the controller's step 10.
    assert float(schedule(7)) == pytest.approx(float(ctl.lr_at(10)), rel=1e-6)
