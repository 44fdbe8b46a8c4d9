"""Settings: the options of a schedule, their checks and derived values."""

import dataclasses

import numpy as np
import pytest

from keras_autolr.core.controller import AutoLRController
from keras_autolr.core.options import FIELDS, Settings


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"total_steps": 1}, "total_steps"),
        ({"total_steps": 10.5}, "total_steps"),
        ({"min_lr": 0.0}, "min_lr"),
        ({"max_lr": float("nan")}, "max_lr"),
        ({"min_lr": 0.1, "max_lr": 0.1}, "min_lr` must be < `max_lr"),
        ({"max_warmup_fraction": 0.0}, "max_warmup_fraction"),
        ({"max_warmup_fraction": 1.5}, "max_warmup_fraction"),
        ({"cooldown_fraction": -0.1}, "cooldown_fraction"),
        ({"warmup": "cubic"}, "warmup"),
        ({"decay": "step"}, "decay"),
        ({"check_every": 0}, "check_every"),
        ({"check_every": 12, "bin_steps": 8}, "multiple of `bin_steps`"),
        ({"check_every": 12, "chunk_steps": 8}, "multiple of `chunk_steps`"),
        ({"chunk_steps": 0}, "chunk_steps"),
        ({"patience": 0}, "patience"),
        ({"bin_steps": True}, "bin_steps"),
        ({"max_bins": 33}, "max_bins"),
        ({"confidence": 0.3}, "confidence"),
        ({"num_tests": 0}, "num_tests"),
        ({"seed": -1}, "seed"),
        ({"smoother": "gpytorch"}, "smoother"),
        ({"act_at_once": 1}, "act_at_once"),
        ({"landing": 0.0}, "landing"),
        ({"landing": 1.5}, "landing"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, match):
    kwargs = {"total_steps": 1000, **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        Settings(**kwargs)
    assert "Received" in str(info.value)
    with pytest.raises(ValueError, match=match):
        AutoLRController(**kwargs)


def test_unknown_options_are_refused_by_name():
    with pytest.raises(TypeError, match="'min_lrr'"):
        AutoLRController(1000, min_lrr=1e-3)


@pytest.mark.parametrize(
    "total, fraction, bin_steps, expected",
    [
        (1000, 0.4, 1, 4),  # Cap 400: 100 tests.
        (90_000, 0.5, 1, 450),
        (1000, 0.4, 8, 8),  # At least one bin.
        (100_000, 0.4, 30, 390),  # 400 rounded to 13 bins of 30.
        (20, 0.1, 1, 1),
    ],
)
def test_check_every_defaults_to_about_100_tests_over_the_cap(
    total, fraction, bin_steps, expected
):
    options = Settings(total, max_warmup_fraction=fraction, bin_steps=bin_steps)
    assert options.check_every == expected
    assert options.check_every % bin_steps == 0
    ramp = int(fraction * total)
    assert options.ramp_steps == ramp // bin_steps * bin_steps
    assert options.shape().ramp_steps == options.ramp_steps


@pytest.mark.parametrize(
    "bin_steps, chunk_steps, check_every, ramp",
    [
        (1, 8, 8, 400),  # 100 tests over the cap of 400: every 4 steps.
        (2, 8, 8, 400),
        (6, 4, 12, 396),  # Where bins of 6 and chunks of 4 end.
        (1, 32, 32, 384),
    ],
)
def test_tests_and_the_cap_fall_where_bins_and_chunks_end(
    bin_steps, chunk_steps, check_every, ramp
):
    options = Settings(1000, bin_steps=bin_steps, chunk_steps=chunk_steps)
    assert options.check_every == check_every
    assert options.ramp_steps == ramp


def test_config_holds_plain_numbers_and_rebuilds_equal_settings():
    options = Settings(
        np.int64(5000),
        min_lr=np.float32(1e-3),
        patience=np.int32(2),
        background=False,
    )
    config = options.config()
    assert "background" not in config
    assert set(config) == set(FIELDS) - {"background"}
    assert type(config["total_steps"]) is int
    assert type(config["min_lr"]) is float
    assert type(config["patience"]) is int
    assert Settings(**config) == dataclasses.replace(options, background=True)


def test_controller_reads_its_settings_as_ctl_settings():
    ctl = AutoLRController(5000, check_every=25, background=False)
    assert ctl.get_config() == ctl.settings.config()
    assert ctl.settings == Settings(5000, check_every=25, background=False)
    assert ctl.total_steps == ctl.settings.total_steps == 5000
    assert ctl.ramp_steps == ctl.settings.ramp_steps == 2000
    with pytest.raises(AttributeError, match="no_such"):
        ctl.no_such  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctl.settings.patience = 3


def test_the_options_as_controller_attributes_are_deprecated_aliases():
    """`ctl.check_every` etc. (release 0.2) still read the option, with a
    DeprecationWarning naming `ctl.settings.<name>`."""
    ctl = AutoLRController(5000, check_every=25, patience=3)
    for name in FIELDS:
        if name == "total_steps":  # A view of its own, not deprecated.
            continue
        with pytest.warns(DeprecationWarning, match=f"settings.{name}"):
            value = getattr(ctl, name)
        assert value == getattr(ctl.settings, name), name
    with pytest.warns(DeprecationWarning):
        assert (ctl.check_every, ctl.patience) == (25, 3)
