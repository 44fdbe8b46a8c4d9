"""The two panels of `keras_autolr.plot`, and the decision in words.

The top panel is the learning rate of every step on a log scale: the warmup
ramp, the LR at the loss minimum, the roll-back at the switch and the decay,
with an epoch axis on top where the run knows its epochs. The bottom panel
is the evidence: the training losses the controller recorded, and the
Gaussian-process posterior of the warmup losses that the decision rests on,
with its minimum, and the validation losses where the run has them.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

import numpy as np

from keras_autolr.core.controller import AutoLRController
from keras_autolr.core.gp import Posterior
from keras_autolr.core.smoothers import make_detector
from keras_autolr.core.warmup import gp_inputs
from keras_autolr.keras.epoch_log import EpochLog

# LR curve resolution: enough for a smooth curve, cheap for any budget.
_GRID_POINTS = 2000
_DECAYS = {
    "cosine": "cosine decay",
    "linear": "linear decay",
    "constant_cosine": "constant LR, then cosine decay",
}
_SWITCH = "C3"  # Colour of everything about the decision.
_VALIDATION = "C2"
# The marker of the loss minimum, on the LR and on the loss panel.
_MINIMUM_MARKER = dict(
    marker="o", ls="", ms=9, mfc="white", mec=_SWITCH, mew=2, zorder=5
)


def draw(
    figure, ctl: AutoLRController, epoch_log: EpochLog, log_loss: bool
) -> None:
    """Draws the run of `ctl` and `epoch_log` on `figure`: its two panels,
    sharing the step axis, and the decision above them."""
    lr_axes, loss_axes = figure.subplots(2, 1, sharex=True)
    facts = _Facts.of(ctl)
    _draw_lr(lr_axes, ctl, facts)
    _draw_loss(loss_axes, ctl, facts, epoch_log, log_loss)
    if epoch_log.steps_per_epoch:
        _draw_epoch_axis(lr_axes, epoch_log.steps_per_epoch)
    # About as many characters as fit the width at the title's font size.
    lines = _decision(ctl, facts).split("\n")
    width = int(figure.get_figwidth() * 11)
    lr_axes.set_title(
        "\n".join(textwrap.fill(line, width) for line in lines),
        loc="left",
        fontsize="medium",
    )


@dataclasses.dataclass(frozen=True)
class _Facts:
    """What the figure shows, derived once from the controller."""

    event: dict[str, Any] | None  # The switch, None while in warmup.
    now: int  # End of the warmup data: the switch step, or the steps run.
    minimum_lr: float | None
    minimum_step: float | None  # Warmup step at which the ramp LR was it.
    posterior: Posterior | None  # Of the warmup losses, x = 1 at `now`.

    @classmethod
    def of(cls, ctl: AutoLRController) -> _Facts:
        event = ctl.switch_event
        now = ctl.switch_step if event else ctl.steps
        minimum_lr = event["minimum_lr"] if event else ctl.lr_at_minimum
        minimum_step = None
        if minimum_lr is not None and now > 0:
            # The ramp is increasing: read the step off it by interpolation
            # (exact in log LR for the exponential ramp).
            steps = np.linspace(0.0, now, _GRID_POINTS)
            ramp = ctl.ramp_lr_at(steps)
            minimum_step = float(
                np.interp(np.log(minimum_lr), np.log(ramp), steps)
            )
        centers, means, counts = ctl.loss_bins()
        warm = np.isfinite(means) & (centers < now)
        posterior = None
        if np.count_nonzero(warm) >= 3:
            # As the test saw them (despiked, with the noise of each bin,
            # unless `filters=False`), smoothed by the run's own smoother.
            settings = ctl.settings
            seen, variance = gp_inputs(means[warm], settings.filters)
            detector = make_detector(settings.smoother, seed=settings.seed)
            posterior = detector.posterior(
                centers[warm] / now, seen, counts[warm], noise=variance
            )
        return cls(event, now, minimum_lr, minimum_step, posterior)


def _draw_lr(ax, ctl: AutoLRController, facts: _Facts) -> None:
    total, done, switch = ctl.total_steps, ctl.steps, ctl.switch_step
    grid = np.concatenate(
        [
            np.linspace(0, total - 1, _GRID_POINTS).round(),
            [switch - 1, switch, done - 1, done],
        ]
    )
    grid = np.unique(grid[(grid >= 0) & (grid < total)])
    lr = ctl.lr_at(grid)
    ax.axvspan(
        0,
        switch if facts.event else done,
        color="C1",
        alpha=0.1,
        lw=0,
        label="warmup" if facts.event else "warmup so far",
    )
    run = grid < done
    # The roll-back is drawn on its own: the line breaks at the switch.
    for part in (grid < switch, grid >= switch):
        ax.plot(grid[part & run], lr[part & run], color="C0", lw=2)
        plan = part & (grid >= done - 1)
        ax.plot(grid[plan], lr[plan], color="C0", lw=1.2, ls="--")
    ax.plot([], [], color="C0", lw=2, label="learning rate of each step")
    if done < total:
        planned = "planned" if facts.event else "planned if the cap comes first"
        ax.plot([], [], color="C0", lw=1.2, ls="--", label=planned)
    if facts.minimum_step is not None:
        ax.plot(
            facts.minimum_step,
            facts.minimum_lr,
            **_MINIMUM_MARKER,
            label=f"LR at the loss minimum{'' if facts.event else ' so far'}"
            f": {_lr(facts.minimum_lr)} (step {facts.minimum_step:.0f})",
        )
    if facts.event:
        before, peak = facts.event["lr_before"], facts.event["peak_lr"]
        if facts.minimum_step is not None:
            ax.plot(
                [facts.minimum_step, switch],
                [facts.minimum_lr] * 2,
                color=_SWITCH,
                lw=1,
                ls=":",
            )
        ax.plot(
            [switch, switch],
            [before, peak],
            color=_SWITCH,
            lw=2,
            label=f"switch at step {switch}: LR {_rolled(before, peak)} "
            f"from {_lr(before)} to {_lr(peak)}",
        )
        ax.annotate(
            "",
            xy=(switch, peak),
            xytext=(switch, before),
            arrowprops={"arrowstyle": "-|>", "color": _SWITCH, "lw": 2},
        )
    ax.set_yscale("log")
    # Room above the curve for the legend.
    low = min(
        ctl.settings.min_lr, ctl.landing_lr
    )  # A divergence can roll back lower.
    ax.set_ylim(0.5 * low, 8.0 * float(np.max(lr)))
    ax.set_ylabel("learning rate")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _draw_epoch_axis(ax, steps_per_epoch: int) -> None:
    """The epochs, on top of `ax`, whose x axis is in steps."""
    epochs = ax.secondary_xaxis(
        "top",
        functions=(
            lambda s: s / steps_per_epoch,
            lambda e: e * steps_per_epoch,
        ),
    )
    epochs.xaxis.get_major_locator().set_params(integer=True)
    epochs.set_xlabel("epoch")


def _draw_loss(
    ax,
    ctl: AutoLRController,
    facts: _Facts,
    epoch_log: EpochLog,
    log_loss: bool,
) -> None:
    centers, means, counts = ctl.loss_bins()
    finite = np.isfinite(means)
    width = int(np.max(counts, initial=1))
    ax.plot(
        centers[finite],
        means[finite],
        color="0.4",
        lw=0.8,
        marker=".",
        ms=3,
        alpha=0.8,
        label="training loss"
        + (f" (mean of {width} steps)" if width > 1 else " of each step"),
    )
    post = facts.posterior
    if post is not None:
        steps = post.x * facts.now
        ax.fill_between(
            steps,
            post.mean - 2 * post.std,
            post.mean + 2 * post.std,
            color="C1",
            alpha=0.25,
            lw=0,
            label="GP posterior mean \u00b1 2 std",
        )
        ax.plot(steps, post.mean, color="C1", lw=2, label="GP posterior mean")
        if facts.minimum_step is not None:
            ax.plot(
                facts.minimum_step,
                np.interp(facts.minimum_step, steps, post.mean),
                **_MINIMUM_MARKER,
                label=f"smoothed loss minimum (step {facts.minimum_step:.0f})",
            )
    if facts.event:
        reason = facts.event["reason"]
        ax.axvline(
            ctl.switch_step,
            color=_SWITCH,
            lw=1.2,
            ls="--",
            label=f"switch at step {ctl.switch_step} ({reason})",
        )
    elif ctl.steps:
        ax.axvline(ctl.steps, color="0.3", lw=1, ls=":", label="now")
    validation = np.array(epoch_log.validation_losses, float).reshape(-1, 2)
    if validation.size:
        ax.plot(
            *validation.T,
            ls="",
            marker="D",
            ms=5,
            color=_VALIDATION,
            zorder=4,
            label="validation loss",
        )
    if log_loss:
        ax.set_yscale("log")
    top = _loss_limits(ax, means[finite], log_loss)
    for steps, values, color, name in (
        (centers, means, _SWITCH, "loss"),
        (*validation.T, _VALIDATION, "validation loss"),
    ):
        with np.errstate(invalid="ignore"):
            above = values > top
        for off, marker, label in (
            (above, "^", f"{name} above the axis"),
            (~np.isfinite(values), "x", f"non-finite {name}"),
        ):
            if np.any(off):
                ax.plot(
                    steps[off],
                    np.full(np.count_nonzero(off), top),
                    marker,
                    color=color,
                    clip_on=False,
                    label=label,
                )
    ax.set_xlim(0, ctl.total_steps)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss" if validation.size else "training loss")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _loss_limits(ax, values: np.ndarray, log: bool) -> float:
    """Keeps the warmup in view when a loss shoots up; returns the top.

    When some loss is far above the start (the highest of the first 8
    bins, as the controller measures the start), the axis stops just above
    the start: an explosion would otherwise flatten the whole curve. The
    margins are measured on the axis's scale (in log loss with `log`).
    """
    if values.size:
        scaled = np.log(values) if log else values
        low, high = float(np.min(scaled)), float(np.max(scaled[:8]))
        margin = 0.08 * max(high - low, 1e-12)
        if float(np.max(scaled)) > high + 2 * margin:
            limits = np.array([low - margin, high + margin])
            ax.set_ylim(*(np.exp(limits) if log else limits))
    return ax.get_ylim()[1]


def _decision(ctl: AutoLRController, facts: _Facts) -> str:
    """The decision in words, on two lines."""
    minimum = facts.minimum_lr
    at_minimum = "" if minimum is None else f"LR {_lr(minimum)}"
    decay = f"{_DECAYS[ctl.settings.decay]} to 0 at step {ctl.total_steps}"
    if facts.event is None:
        first = (
            f"AutoLR: warmup in progress at step {ctl.steps} of "
            f"{ctl.total_steps} (LR {_lr(ctl.lr)}); no loss minimum "
            "detected yet"
        )
        second = (
            f"smoothed loss minimum so far at {at_minimum}; " if minimum else ""
        ) + (
            f"without a detection, warmup ends at the cap (step "
            f"{ctl.switch_step}), then {decay}"
        )
        return f"{first}\n{second}"
    step, reason = facts.event["step"], facts.event["reason"]
    before, peak = facts.event["lr_before"], facts.event["peak_lr"]
    first = {
        "minimum": f"AutoLR: loss minimum at {at_minimum} detected at step "
        f"{step}",
        "explosion": f"AutoLR: loss rose back to its starting level at step "
        f"{step}; loss minimum at {at_minimum}",
        "divergence": f"AutoLR: non-finite loss at step {step - 1}",
        "cap": f"AutoLR: warmup cap reached at step {step}",
    }.get(reason, f"AutoLR: warmup ended at step {step} ({reason})")
    if minimum is not None and reason in ("divergence", "cap"):
        first += f"; smoothed loss minimum at {at_minimum}"
    second = (
        f"LR {_rolled(before, peak)} from {_lr(before)} to {_lr(peak)}, {decay}"
    )
    return f"{first}\n{second}"


def _rolled(before: float, peak: float) -> str:
    # The peak is usually below the LR reached, but the LR at the minimum
    # can be one step ahead of it.
    return "rolled back" if peak <= before else "raised"


def _lr(value: float) -> str:
    """`0.0312` as `3.1e-2`: short, and comparable at a glance."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"
