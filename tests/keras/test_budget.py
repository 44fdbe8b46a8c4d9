import pytest

from keras_autolr.core.options import OPTION_NAMES, Settings
from keras_autolr.keras import budget
from keras_autolr.keras.callback import AutoLR


def test_budget_takes_autolr_s_own_numbers_else_fit_s():
    assert budget.budget({"epochs": 5, "steps": 30}, None, None) == (5, 30)
    assert budget.budget({"epochs": 5, "steps": 30}, 8, 12) == (8, 12)
    with pytest.raises(ValueError, match="steps_per_epoch="):
        budget.budget({"epochs": 5, "steps": None}, None, None)
    with pytest.raises(ValueError, match="runs past the AutoLR budget"):
        budget.budget({"epochs": 9, "steps": 30}, 8, None)


def test_tests_fall_where_a_bin_and_a_chunk_end():
    ctl = budget.make_controller({}, 10, "loss", 4, 50, chunk=4)
    assert ctl.total_steps == 200
    assert ctl.settings.check_every == 12  # 10 rounded up to a multiple of 4.
    assert ctl.settings.bin_steps == 1 and ctl.settings.chunk_steps == 4
    ctl = budget.make_controller({}, "epoch", "loss", 4, 50, chunk=4)
    assert ctl.settings.check_every == 52  # One epoch, rounded up to the chunk.


def test_losses_from_the_logs_come_in_bins_of_a_chunk():
    ctl = budget.make_controller({}, None, "loss", 4, 50, 4, per_step=False)
    assert ctl.settings.bin_steps == 4
    with pytest.raises(ValueError, match="bin_steps.*steps_per_execution"):
        budget.make_controller(
            {"bin_steps": 2}, None, "acc", 4, 50, 4, per_step=False
        )


def test_the_callback_passes_every_controller_option_through():
    # `check_every` (which also takes "epoch"), `background` and
    # `chunk_steps` (the model's steps_per_execution) are the callback's to
    # set.
    passed = set(OPTION_NAMES) - {"check_every", "background", "chunk_steps"}
    assert set(budget.CALLBACK_OPTIONS) == passed
    callback = AutoLR(**{name: getattr(Settings(10), name) for name in passed})
    assert set(callback.controller_options) == passed


def test_unknown_options_are_refused_by_name():
    with pytest.raises(TypeError, match="'min_lrr'"):
        AutoLR(min_lrr=1e-3)


def test_arguments_are_checked_before_any_fit():
    options = {"min_lr": 1e-3}
    checked = budget.check_arguments(options, 3, None, 1, "loss", "epoch")
    assert checked == options and checked is not options
    with pytest.raises(TypeError, match="'min_lrr'"):
        budget.check_arguments({"min_lrr": 1}, 3, None, 1, "loss", None)
    with pytest.raises(ValueError, match="verbose=3"):
        budget.check_arguments({}, 3, None, 3, "loss", None)
    with pytest.raises(ValueError, match="monitor=''"):
        budget.check_arguments({}, 3, None, 1, "", None)
    with pytest.raises(ValueError, match="max_lr"):
        # An option value out of range, caught by the probe controller.
        budget.check_arguments({"max_lr": -1.0}, 3, None, 1, "loss", None)
