import pytest

from keras_autolr import fit_plan


def test_budget_takes_autolr_s_own_numbers_else_fit_s():
    assert fit_plan.budget({"epochs": 5, "steps": 30}, None, None) == (5, 30)
    assert fit_plan.budget({"epochs": 5, "steps": 30}, 8, 12) == (8, 12)
    with pytest.raises(ValueError, match="steps_per_epoch="):
        fit_plan.budget({"epochs": 5, "steps": None}, None, None)
    with pytest.raises(ValueError, match="runs past the AutoLR budget"):
        fit_plan.budget({"epochs": 9, "steps": 30}, 8, None)


def test_tests_fall_where_a_bin_and_a_chunk_end():
    ctl = fit_plan.make_controller({}, 10, "loss", 4, 50, chunk=4)
    assert ctl.total_steps == 200
    assert ctl.check_every == 12  # 10 rounded up to a multiple of 4.
    assert ctl.settings.bin_steps == 1 and ctl.settings.chunk_steps == 4
    ctl = fit_plan.make_controller({}, "epoch", "loss", 4, 50, chunk=4)
    assert ctl.check_every == 52  # One epoch, rounded up to the chunk.


def test_losses_from_the_logs_come_in_bins_of_a_chunk():
    ctl = fit_plan.make_controller({}, None, "loss", 4, 50, 4, per_step=False)
    assert ctl.settings.bin_steps == 4
    with pytest.raises(ValueError, match="bin_steps.*steps_per_execution"):
        fit_plan.make_controller(
            {"bin_steps": 2}, None, "acc", 4, 50, 4, per_step=False
        )
