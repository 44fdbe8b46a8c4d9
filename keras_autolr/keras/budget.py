"""The schedule that one `fit` gets: its budget, and the controller for it.

`AutoLR` checks its arguments when it is made (`check_arguments`), plans
its budget from them and from what `fit` reports (`budget`), then builds
the controller for that budget and the model's `steps_per_execution`
(`make_controller`): tests where a bin and a chunk both end, and bins of
one chunk where the loss comes from the logs.
"""

import math
import warnings

import keras

from keras_autolr.core import checks as check
from keras_autolr.core import messages, options
from keras_autolr.core.controller import AutoLRController

# The controller options that `AutoLR` passes through (`check_every` is the
# callback's own: it also takes "epoch"; `chunk_steps` is the model's
# `steps_per_execution`).
CALLBACK_OPTIONS = tuple(
    o
    for o in options.OPTION_NAMES
    if o not in ("check_every", "background", "chunk_steps")
)

# Warn when no test can run before this fraction of the warmup ramp.
_LATE_TEST = 0.25


def check_arguments(
    kwargs, epochs, steps_per_epoch, verbose, monitor, check_every
):
    """Checks `AutoLR`'s arguments, and its controller options `kwargs`
    on a controller built for a probe budget; returns a copy of `kwargs`.

    Raises:
        TypeError: for an option `AutoLR` does not take.
        ValueError: naming the argument and the value received.
    """
    unknown = sorted(set(kwargs) - set(CALLBACK_OPTIONS))
    if unknown:
        raise TypeError(
            f"Unrecognized keyword arguments passed to AutoLR: {unknown}. "
            f"Valid options: {list(CALLBACK_OPTIONS)}"
        )
    check.check_optional_int("epochs", epochs)
    check.check_optional_int("steps_per_epoch", steps_per_epoch)
    if verbose not in (0, 1, 2, True, False):
        raise ValueError(
            "Argument `verbose` must be 0, 1 or 2. "
            f"Received: verbose={verbose!r}"
        )
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(
            "Argument `monitor` must be a non-empty string. "
            f"Received: monitor={monitor!r}"
        )
    if check_every != "epoch":
        check.check_optional_int("check_every", check_every)
    make_controller(
        kwargs,
        check_every,
        monitor,
        epochs or 100,
        steps_per_epoch or 1000,
        probe=True,
    )
    return dict(kwargs)


def budget(params, epochs, steps_per_epoch):
    """`(epochs, steps per epoch)` of the schedule: `AutoLR`'s own, else
    those `fit` reports in `params`.

    Raises:
        ValueError: if the steps per epoch are unknown, or `fit` runs more
            epochs than the budget.
    """
    steps = steps_per_epoch or params.get("steps")
    if not steps:
        raise ValueError(
            "AutoLR needs the number of steps per epoch to plan its "
            "budget, and fit() does not know it (a dataset of unknown "
            "cardinality, e.g. from a generator or after filter()). "
            "Pass `steps_per_epoch=` to fit() or to AutoLR(), or use a "
            "dataset of known size."
        )
    fit_epochs = params.get("epochs")
    if epochs and fit_epochs and fit_epochs > epochs:
        raise ValueError(
            f"fit(epochs={fit_epochs}) runs past the AutoLR budget of "
            f"AutoLR(epochs={epochs}): the LR is 0 after epoch "
            f"{epochs}. Give both the same number of epochs."
        )
    return int(epochs or fit_epochs), int(steps)


def make_controller(
    options,
    check_every,
    monitor,
    epochs,
    steps_per_epoch,
    chunk=1,
    per_step=True,
    probe=False,
):
    """The controller for a budget, with `chunk` = steps_per_execution.

    `options` are the controller's; `check_every` is `AutoLR`'s (an int,
    `"epoch"` or `None`). With the losses read from the logs
    (`per_step=False`), bins default to one chunk: Keras logs one mean per
    chunk, and splitting it into per-step bins would feed the detector
    repeated values (its noise estimate would collapse). `probe` checks
    the options without a budget (`check_every` is left out).
    """
    options = dict(options)
    bin_steps = options.setdefault("bin_steps", 1 if per_step else chunk)
    if not per_step and bin_steps % chunk:
        raise ValueError(
            "Argument `bin_steps` must be a multiple of the model's "
            f"steps_per_execution ({chunk}) when the loss is read from "
            f"the logs (monitor={monitor!r}, or a train step of "
            f"the model's own): they hold one mean per chunk of {chunk} "
            f"steps. Received: bin_steps={bin_steps}"
        )
    if check_every == "epoch":
        check_every = steps_per_epoch
    if check_every is not None:
        # A check happens where a bin and a chunk end.
        unit = math.lcm(bin_steps, chunk)
        check_every = -(-check_every // unit) * unit
    return AutoLRController(
        total_steps=epochs * steps_per_epoch,
        check_every=None if probe else check_every,
        chunk_steps=chunk,
        **options,
    )


def warn_if_tests_come_late(controller):
    """A `RuntimeWarning` if chunks or bins put the first test late on the
    ramp (only at the start of a schedule)."""
    ctl = controller
    if (
        ctl.steps
        or ctl.settings.step_unit == 1
        or ctl.first_test_step <= _LATE_TEST * ctl.ramp_steps
    ):
        return
    warnings.warn(messages.late_first_test(ctl), RuntimeWarning, stacklevel=2)


def warn_if_budget_too_short(controller):
    """A `RuntimeWarning` if the warmup cap comes before `patience` tests
    can run (after `min_bins` bins): no vote can end warmup, the cap does,
    at an LR the ramp has run (only at the start of a schedule)."""
    ctl, settings = controller, controller.settings
    every = settings.check_every
    needed = ctl.first_test_step + (settings.patience - 1) * every
    if ctl.steps or ctl.ramp_steps >= needed:
        return
    total = math.ceil(needed / settings.max_warmup_fraction)
    warnings.warn(
        messages.budget_too_short(
            ctl.total_steps, ctl.ramp_steps, needed, total
        ),
        RuntimeWarning,
        stacklevel=2,
    )


# Callbacks that set the LR themselves: beside AutoLR, their LR is ignored.
_LR_SETTERS = (
    keras.callbacks.ReduceLROnPlateau,
    keras.callbacks.LearningRateScheduler,
)


def check_other_callbacks(callbacks):
    """Raises if another callback of the `fit` sets the LR.

    Raises:
        ValueError: naming the callback.
    """
    for callback in callbacks:
        if isinstance(callback, _LR_SETTERS):
            name = type(callback).__name__
            raise ValueError(
                f"AutoLR sets the learning rate of every step, and "
                f"{name} in the same fit sets it too: the LR it sets would "
                f"be ignored. Remove {name}, or AutoLR."
            )
