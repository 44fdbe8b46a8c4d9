"""What AutoLR tells the user: the lines it prints and its warnings.

Pure text from the controller's events and views, so that the Keras adapter
reads as a sequence of actions.
"""

from __future__ import annotations

from typing import Any

_HOW_WARMUP_ENDED = {
    "minimum": "loss passed its minimum",
    "divergence": "loss became non-finite",
    "explosion": "loss rose back to its starting level",
    "overshoot": "LR passed 3x the LR at the smoothed loss minimum",
    "cap": "warmup cap reached",
}


def switch_line(
    event: dict[str, Any], settings: Any, steps_per_epoch: int
) -> str:
    """The line printed when warmup ends (`verbose=1`), from its event and
    the schedule's `Settings`."""
    step = event["step"]
    lr_min = event["minimum_lr"]
    lr_min_text = "n/a" if lr_min is None else f"{lr_min:.3g}"
    return (
        f"AutoLR: warmup ended at step {step} (epoch "
        f"{step // steps_per_epoch + 1}), {_HOW_WARMUP_ENDED[event['reason']]}"
        f". LR at the loss minimum {lr_min_text}, decay from "
        f"{event['peak_lr']:.3g} (highest LR run {event['lr_before']:.3g}), "
        f"{settings.decay} to 0 over the remaining "
        f"{settings.total_steps - step} steps."
    )


def ended_early(report: Any, total_steps: int) -> str:
    """The line printed when `fit` ends before the budget (`verbose>=1`)."""
    return (
        f"AutoLR: fit ended at step {report.steps} of its budget of "
        f"{total_steps} steps, in {report.phase} at LR {report.last_lr:.3g}. "
        "Continue the run with `fit(initial_epoch=...)` and the same AutoLR "
        "(or `backup_dir`)."
    )


def summary_line(summary: dict[str, Any]) -> str:
    """The line printed at the end of `fit` (`verbose>=1`): what the run
    found (`AutoLR.summary`)."""
    if summary["switch_step"] is None:
        return (
            f"AutoLR: still in warmup after {summary['steps']} steps, "
            f"highest LR run {summary['highest_lr']:.3g}."
        )
    lr_min = summary["lr_at_minimum"]
    return (
        f"AutoLR: warmup ended at step {summary['switch_step']} "
        f"({summary['reason']}); LR at the loss minimum "
        f"{'n/a' if lr_min is None else f'{lr_min:.3g}'}, decay from "
        f"{summary['landing_lr']:.3g}, highest LR run "
        f"{summary['highest_lr']:.3g}; {len(summary['rescues'])} decay "
        "restarts. `autolr.found_schedule()` gives this schedule for "
        "another run."
    )


def budget_too_short(
    total_steps: int, ramp_steps: int, needed: int, enough: int
) -> str:
    """The warning when the warmup cap comes before the tests it needs."""
    return (
        f"AutoLR's budget of {total_steps} steps ends warmup by step "
        f"{ramp_steps}, before the {needed} steps its tests need: warmup "
        "will end at the cap, at no more than half the LR reached there. Give "
        f"AutoLR a budget of at least {enough} steps (more epochs, or a "
        "smaller batch)."
    )


def lr_written(value: float, epoch: int) -> str:
    """The warning when something else wrote the optimizer's LR."""
    return (
        f"Something set the optimizer's learning rate to {value:.4g} during "
        f"epoch {epoch + 1} (another callback, or your code): AutoLR sets "
        "the LR of every step, so that value is not used. Remove the other "
        "LR setting, or AutoLR."
    )


def rescue_line(event: dict[str, Any], kept: int | None) -> str:
    """The line printed when the decay restarts (`verbose=1`)."""
    weights = "." if kept is None else f" from the weights of step {kept}."
    return (
        f"AutoLR: loss blew up during decay at step {event['step'] - 1} "
        f"({event['reason']}); decay restarts at LR "
        f"{event['peak_lr']:.3g}{weights}"
    )


def restored_before_divergence(kept: int, event: dict[str, Any]) -> str:
    return (
        f"AutoLR: restored the weights and optimizer state kept at step "
        f"{kept}, before the loss became non-finite at step "
        f"{event['step'] - 1}."
    )


NO_COPY_BEFORE_DIVERGENCE = (
    "AutoLR: the weights became non-finite before any copy was kept; "
    "training continues from non-finite weights. Lower `min_lr` or `max_lr`."
)


def restored_after_blow_up(kept: int, event: dict[str, Any]) -> str:
    return (
        f"AutoLR: restored the weights and optimizer state kept at step "
        f"{kept} (lowest loss) after the loss blew up at step "
        f"{event['step'] - 1}."
    )


def late_first_test(ctl: Any) -> str:
    """Large bins or chunks push the first test up the ramp."""
    first = ctl.first_test_step
    settings = ctl.settings
    return (
        f"AutoLR tests the loss minimum where a bin of {settings.bin_steps} "
        f"steps and a chunk of {settings.chunk_steps} (the model's "
        f"steps_per_execution) end, so its first test can only run at step "
        f"{first}, {first / ctl.ramp_steps:.0%} of the way up the warmup "
        f"ramp (LR {ctl.ramp_lr_at(float(first)):.3g} by then): it may see "
        "the minimum too late. Lower steps_per_execution or `bin_steps`, or "
        "train for more steps."
    )


def diverged_in_warmup(loss: float, step: int, lr: float, safe: float) -> str:
    return (
        f"AutoLR: non-finite loss ({loss}) at step {step} with LR {lr:.4g}; "
        f"warmup ends now and the LR rolls back to {safe:.4g}."
    )


def rescue_warning(event: dict[str, Any]) -> str:
    what = {
        "divergence": "became non-finite",
        "explosion": "climbed back to its starting level",
    }[event["reason"]]
    return (
        f"AutoLR: the loss {what} during decay (step {event['step'] - 1}, "
        f"LR {event['lr_before']:.4g}); the decay restarts at LR "
        f"{event['peak_lr']:.4g}."
    )


def mean_wider_than_a_bin(num_steps: int, bin_width: int) -> str:
    """The error of `AutoLRController.update` for a mean of more steps than
    a bin of the loss record (`bin_width` steps) holds."""
    return (
        "Argument `num_steps` must be at most the width of a bin of the "
        f"loss record ({bin_width} steps): a mean of {num_steps} "
        "steps spread over several bins makes the loss look noiseless to "
        f"the tests. Build the controller with `bin_steps={num_steps}` (a "
        "multiple of the chunk size), or pass each step's loss to "
        f"`update_steps()`. Received: num_steps={num_steps}"
    )
