"""decay: the guards that restart the decay when the loss blows up."""

import numpy as np

from keras_autolr.core import decay
from keras_autolr.core.losses import LossRecord
from keras_autolr.core.options import Settings
from keras_autolr.core.schedule import Decisions


def record_of(losses):
    record = LossRecord(bin_steps=1, max_bins=1024)
    for loss in losses:
        record.add(float(loss), 1)
    return record


def switched_at(step):
    settings = Settings(1000)
    decisions = Decisions(settings.shape(), settings.ramp_steps, 1.0)
    decisions.switch(step, 0.01)
    return decisions


FELL = np.concatenate([np.linspace(2.0, 1.0, 50), np.full(50, 1.0)])


def test_a_loss_back_at_its_start_blows_up_once_the_wait_is_over():
    decisions = switched_at(60)
    back = record_of(np.concatenate([FELL, np.full(20, 2.0)]))  # 120 steps.
    assert decay.blew_up_in_decay(back, decisions, 1000, 40, 10)
    # Too soon after the switch (a rise must last), or past the budget.
    assert not decay.blew_up_in_decay(back, decisions, 1000, 80, 10)
    assert not decay.blew_up_in_decay(back, decisions, 120, 40, 10)
    # Still at its lowest: no blow-up.
    calm = record_of(np.concatenate([FELL, np.full(20, 1.0)]))
    assert not decay.blew_up_in_decay(calm, decisions, 1000, 40, 10)


def test_after_a_restart_only_a_recovery_rearms_the_guards():
    decisions = switched_at(60)
    dead = record_of(np.concatenate([FELL, np.full(60, 2.0)]))  # 160 steps.
    assert decay.restart_after_non_finite(dead, decisions, 1000)
    decisions.restart(120, 0.005)
    # Never back below the start since the restart: no second one.
    assert not decay.blew_up_in_decay(dead, decisions, 1000, 20, 10)
    assert not decay.restart_after_non_finite(dead, decisions, 1000)
    recovered = record_of(
        np.concatenate([FELL, np.full(20, 2.0), np.full(20, 1.0)])
    )
    assert decay.recovered(*recovered.bins()[:2], 120)
    assert decay.restart_after_non_finite(recovered, decisions, 1000)
