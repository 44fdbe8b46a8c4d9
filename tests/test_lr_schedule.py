import math

import numpy as np
import pytest

from keras_autolr import AutoLRController
from keras_autolr.lr_schedule import AutoLRSchedule

NAMES = ("switch_step", "slow_step", "decay_start", "peak_lr")


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
    assert float(schedule.peak_lr.numpy()) == pytest.approx(ctl.decay_peak_lr)
    assert not schedule.sync()  # Same revision: nothing to do.
    assert written == ["peak_lr"]
    written.clear()
    assert schedule.sync(force=True)
    assert sorted(written) == sorted(NAMES)


def test_align_moves_the_offset_only_when_it_changes():
    ctl = AutoLRController(total_steps=400)
    for _ in range(10):
        ctl.step(1.0)
    schedule = AutoLRSchedule(ctl)
    assert schedule.align(10) is False  # Iterations == steps: offset 0.
    assert schedule.align(7) is True  # Three steps skipped by the optimizer.
    assert schedule.align(7) is False
    assert schedule.align(7, force=True) is True
    # Optimizer step 7 is the controller's step 10.
    assert float(schedule(7)) == pytest.approx(float(ctl.lr_at(10)), rel=1e-6)
