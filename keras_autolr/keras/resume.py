"""Where a `fit` starts: a new schedule at epoch 0, or the schedule of an
interrupted run, read back from `backup_dir` and checked before it is used.
"""

import warnings

from keras_autolr.keras import backup
from keras_autolr.keras.epoch_log import EpochLog
from keras_autolr.keras.weights import fingerprint, fingerprint_difference


def start(
    epoch, steps_per_epoch, controller, epoch_log, weights, store, model, **why
):
    """Brings `controller` and `epoch_log` (and `weights`, the
    `WeightKeeper`, where it holds no copy yet) to the start of epoch
    `epoch` of a `fit`.

    A fit that starts at epoch 0 starts a new schedule, even with a
    callback that has run before (with a warning then), and forgets the
    validation losses; the states and weight copies of an earlier run in
    `store` are deleted (they would be taken for this run's after a
    restart). A later epoch takes the state saved after it in `store`, each
    part checked first, with the validation losses saved in it.

    Args:
        why: `replanned_from`, the budget in steps of the callback's
            previous fit where `fit` changed it (for the error's words);
            `write`, how to run a write to `store` (failures only warn).

    Raises:
        ValueError: the schedule cannot be continued at `epoch` (a
            `backup.BackupError` where a file is at fault).
    """
    expected = epoch * steps_per_epoch
    if epoch == 0:
        if controller.steps:
            warnings.warn(
                f"AutoLR starts a new schedule (warmup from "
                f"{controller.settings.min_lr:g}) on a model it has trained "
                f"for {controller.steps} steps: `fit` starts at epoch 0. To "
                "continue the schedule, fit with `initial_epoch=`; to "
                "fine-tune without AutoLR, leave it out of the callbacks.",
                RuntimeWarning,
                stacklevel=4,
            )
        controller.reset()
        epoch_log.validation_losses = ()
        if store is not None:
            why["write"](store.clear)
        return
    behind = controller.steps != expected
    copies = store is not None and weights is not None and not weights.taken
    if not (behind or copies):
        return
    state = store.load(epoch) if store is not None else None
    if behind and state is None:
        text = _cannot_resume(epoch, expected, controller, store, why)
        raise ValueError(text)
    if state is not None:
        _take(
            state,
            epoch,
            store,
            model,
            controller if behind else None,
            epoch_log,
            weights if copies else None,
        )


def _take(state, epoch, store, model, controller, epoch_log, weights):
    """Takes `state` into `controller` and its validation losses into
    `epoch_log`, and into `weights` (each where given) once each part is
    checked; keeps nothing if one fails."""
    saved = state.get(backup.FINGERPRINT)
    if saved is not None:
        difference = fingerprint_difference(saved, fingerprint(model))
        if difference is not None:
            raise store.error(
                epoch, f"belongs to another model or optimizer: {difference}"
            )
    if weights is not None:
        weights.load(store, state)
    if controller is not None:
        try:
            saved_log = EpochLog.from_state(state)
            controller.set_state(state)
        except ValueError as error:
            if weights is not None:
                weights.release()
            raise store.error(
                epoch, f"holds a state this run cannot use. {error}"
            ) from error
        epoch_log.validation_losses = saved_log.validation_losses


def _cannot_resume(epoch, expected, controller, store, why):
    """Why a fit from `epoch` cannot continue the schedule, and what to do."""
    text = (
        f"Training starts at epoch {epoch} (step {expected}), but AutoLR's "
        f"schedule is at step {controller.steps}"
    )
    replanned = why.get("replanned_from")
    if replanned is not None:
        return (
            f"{text}: its budget changed from {replanned} steps to "
            f"{controller.total_steps} (AutoLR() without `epochs` takes "
            "fit's `epochs`, which a resumed fit changes). Give AutoLR the "
            "whole budget, `AutoLR(epochs=...)`, in every fit of the run."
        )
    where = (
        f"{store.directory} has no state saved after epoch {epoch} (it has "
        f"{store.epochs()})."
        if store is not None
        else "no `backup_dir` was given."
    )
    return (
        f"{text} and {where} To resume a run, pass the same `backup_dir=` "
        "to AutoLR in the interrupted and the resumed run; to start a new "
        "schedule, fit from epoch 0."
    )
