"""Learning-rate maths of AutoLR as small pure functions of the step.

Every function takes the step count explicitly and an array namespace `xp`
(NumPy by default). The same code therefore serves the host-side controller
(`xp=numpy`, float64) and the in-graph schedule that the optimizer evaluates
every step (`xp=keras.ops`, see `keras_autolr.keras_schedule`), so the formula
lives in exactly one place.

Conventions: `step` is the 0-based index of an optimizer update; the value
returned is the learning rate used *by* that update.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace
from typing import Any

import numpy as np

WARMUPS = ("exponential", "linear")
DECAYS = ("cosine", "linear", "constant_cosine")

# Plain-Python floats: ~10x cheaper than NumPy ufuncs on a scalar, for the
# per-step LR on the host.
SCALAR = SimpleNamespace(
    power=math.pow,
    cos=math.cos,
    clip=lambda x, low, high: min(max(x, low), high),
    maximum=max,
    minimum=min,
    where=lambda condition, x, y: x if condition else y,
)


def exponential_ramp(
    step: Any, min_lr: float, max_lr: float, ramp_steps: float, xp: Any = np
) -> Any:
    """Geometric growth from `min_lr` at step 0 to `max_lr` at `ramp_steps`.

    `min_lr * (max_lr / min_lr) ** (step / ramp_steps)`.
    """
    return min_lr * xp.power(max_lr / min_lr, step / ramp_steps)


def linear_ramp(
    step: Any, min_lr: float, max_lr: float, ramp_steps: float, xp: Any = np
) -> Any:
    """Linear growth from `min_lr` at step 0 to `max_lr` at `ramp_steps`."""
    del xp  # Pure arithmetic; kept for a uniform signature.
    return min_lr + (max_lr - min_lr) * (step / ramp_steps)


def _progress(step: Any, start: Any, end: Any, xp: Any) -> Any:
    """How far `step` is from `start` (0) to `end` (1), clipped to [0, 1]."""
    return xp.clip((step - start) / xp.maximum(end - start, 1.0), 0.0, 1.0)


def cosine_decay(
    step: Any, peak_lr: Any, start: Any, end: Any, xp: Any = np
) -> Any:
    """Half-cosine from `peak_lr` at `start` to exactly 0 at `end`.

    Steps before `start` give `peak_lr`, steps after `end` give 0.
    """
    progress = _progress(step, start, end, xp)
    return peak_lr * 0.5 * (1.0 + xp.cos(math.pi * progress))


def linear_decay(
    step: Any, peak_lr: Any, start: Any, end: Any, xp: Any = np
) -> Any:
    """Straight line from `peak_lr` at `start` to exactly 0 at `end`.

    Steps before `start` give `peak_lr`, steps after `end` give 0.
    """
    progress = _progress(step, start, end, xp)
    return peak_lr * (1.0 - progress)


def constant_cosine_decay(
    step: Any,
    peak_lr: Any,
    start: Any,
    end: Any,
    cooldown_steps: float,
    xp: Any = np,
) -> Any:
    """`peak_lr` held constant, then a half-cosine to 0 over the last steps.

    The cosine covers the last `cooldown_steps` steps before `end`, or starts
    at `start` if that is later (a switch inside the cooldown window).
    """
    cooldown_start = xp.maximum(end - cooldown_steps, start)
    return cosine_decay(step, peak_lr, cooldown_start, end, xp=xp)


def ramp(
    kind: str,
    step: Any,
    min_lr: float,
    max_lr: float,
    ramp_steps: float,
    xp: Any = np,
) -> Any:
    """The warmup ramp named by `kind` (`"exponential"` or `"linear"`)."""
    if kind == "exponential":
        return exponential_ramp(step, min_lr, max_lr, ramp_steps, xp=xp)
    if kind == "linear":
        return linear_ramp(step, min_lr, max_lr, ramp_steps, xp=xp)
    raise ValueError(f"Unknown warmup {kind!r}; expected one of {WARMUPS}.")


def decay(
    kind: str,
    step: Any,
    peak_lr: Any,
    start: Any,
    end: Any,
    cooldown_steps: float,
    xp: Any = np,
) -> Any:
    """The decay named by `kind`: `"cosine"`, `"linear"` or
    `"constant_cosine"`."""
    if kind == "cosine":
        return cosine_decay(step, peak_lr, start, end, xp=xp)
    if kind == "linear":
        return linear_decay(step, peak_lr, start, end, xp=xp)
    if kind == "constant_cosine":
        return constant_cosine_decay(
            step, peak_lr, start, end, cooldown_steps, xp=xp
        )
    raise ValueError(f"Unknown decay {kind!r}; expected one of {DECAYS}.")


def autolr(
    step: Any,
    *,
    switch_step: Any,
    peak_lr: Any,
    warmup: str,
    decay_kind: str,
    min_lr: float,
    max_lr: float,
    ramp_steps: float,
    total_steps: float,
    cooldown_steps: float,
    decay_start: Any = None,
    xp: Any = np,
) -> Any:
    """The whole AutoLR schedule: ramp before `switch_step`, decay from it.

    Before a decision is made `switch_step` is the warmup cap (`ramp_steps`)
    and `peak_lr` is `max_lr`, so that with no intervention the schedule
    ends warmup at the cap at the LR it has reached, as AutoWU does.

    The decay runs from `peak_lr` at `decay_start` (default: `switch_step`)
    to 0 at `total_steps`. A decay restarted after a rescue starts later
    than the switch; the steps between are not described by this call.
    """
    if decay_start is None:
        decay_start = switch_step
    step = xp.minimum(step, total_steps)
    warm = warmup_lr(
        warmup, step, min_lr=min_lr, max_lr=max_lr, ramp_steps=ramp_steps, xp=xp
    )
    cool = decay(
        decay_kind, step, peak_lr, decay_start, total_steps, cooldown_steps, xp
    )
    return xp.where(step < switch_step, warm, cool)


def warmup_lr(
    kind: str,
    step: Any,
    *,
    min_lr: float,
    max_lr: float,
    ramp_steps: float,
    xp: Any = np,
) -> Any:
    """LR of step `step` during warmup: the ramp, held at `max_lr` from
    `ramp_steps` on."""
    position = xp.minimum(step, ramp_steps)
    return ramp(kind, position, min_lr, max_lr, ramp_steps, xp=xp)


@dataclasses.dataclass(frozen=True)
class Shape:
    """The fixed part of an AutoLR schedule: its ramp and decay, and the
    budget. The decisions (switch step, peak LR) are arguments."""

    warmup: str
    decay: str
    min_lr: float
    max_lr: float
    ramp_steps: float
    total_steps: float
    cooldown_steps: float

    def lr(
        self,
        step: Any,
        switch_step: Any,
        peak_lr: Any,
        decay_start: Any = None,
        xp: Any = np,
    ) -> Any:
        """`autolr` of this shape."""
        return autolr(
            step,
            switch_step=switch_step,
            peak_lr=peak_lr,
            warmup=self.warmup,
            decay_kind=self.decay,
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            ramp_steps=self.ramp_steps,
            total_steps=self.total_steps,
            cooldown_steps=self.cooldown_steps,
            decay_start=decay_start,
            xp=xp,
        )

    def warmup_lr(self, step: Any, xp: Any = np) -> Any:
        """`warmup_lr` of this shape."""
        return warmup_lr(
            self.warmup,
            step,
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            ramp_steps=self.ramp_steps,
            xp=xp,
        )

    def decay_lr(self, step: Any, peak_lr: Any, start: Any, xp: Any = np):
        """`decay` of this shape, from `peak_lr` at `start`."""
        return decay(
            self.decay,
            xp.minimum(step, self.total_steps),
            peak_lr,
            start,
            self.total_steps,
            self.cooldown_steps,
            xp=xp,
        )
