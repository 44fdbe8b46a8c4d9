"""The LR of every step: pure formulas, the `Shape` of a run, and the
`Decisions` that fix the rest.

Every function takes the step count explicitly and an array namespace `xp`
(NumPy by default). The same code therefore serves the host-side controller
(`xp=numpy`, float64) and the in-graph schedule that the optimizer evaluates
every step (`xp=keras.ops`, `keras_autolr.keras.lr_schedule`), so each
formula lives in exactly one place. A `Shape` is what the options fix (ramp,
decay, budget); `Decisions` is what the controller decides on the way (the
switch step, the landing LR, restarts of the decay): together they give the
LR of any step.

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


class Decisions:
    """The switch step, landing LR and decay restarts of a schedule: what
    the controller has decided so far, and the LR of any step under it.
    Only the controller changes it; `revision` counts the changes, so that
    the in-graph schedule knows when to copy them to the device.

    Args:
        shape: the ramp, decay and budget.
        cap: the switch step until a decision: the end of the ramp.
        max_lr: the landing LR until a decision: warmup would end at the
            cap at the LR the ramp reached there.
    """

    def __init__(self, shape: Shape, cap: int, max_lr: float):
        self.shape = shape
        self.cap = int(cap)
        self.max_lr = float(max_lr)
        self.reset()

    def reset(self) -> None:
        """Forgets every decision."""
        self.switch_step = self.cap
        self.landing_lr = self.max_lr
        self.restarts: list[tuple[int, float]] = []  # (step, LR)
        self.revision = 0
        self._cache: tuple[int, dict[float, float]] = (-1, {})

    def switch(self, step: int, landing_lr: float) -> None:
        """Ends warmup at `step`; the decay starts there from
        `landing_lr`."""
        self.switch_step = int(step)
        self.landing_lr = float(landing_lr)
        self.revision += 1

    def set_landing(self, landing_lr: float) -> None:
        """Moves the provisional landing LR (warmup goes on)."""
        if landing_lr != self.landing_lr:
            self.landing_lr = float(landing_lr)
            self.revision += 1

    def restart(self, step: int, lr: float) -> None:
        """Restarts the decay at `step` from `lr`."""
        self.restarts.append((int(step), float(lr)))
        self.revision += 1

    @property
    def decay_start(self) -> int:
        """First step of the current decay: the switch, or the last
        restart."""
        return self.restarts[-1][0] if self.restarts else self.switch_step

    @property
    def decay_lr(self) -> float:
        """LR at `decay_start`."""
        return self.restarts[-1][1] if self.restarts else self.landing_lr

    def lr_at(self, step: Any) -> Any:
        """LR of step(s) `step` under the decisions made so far."""
        if isinstance(step, int | float) or np.ndim(step) == 0:
            # The Keras adapter asks for the LR of the same few steps
            # again and again between two decisions.
            step = float(step)
            if self._cache[0] != self.revision:
                self._cache = (self.revision, {})
            cache = self._cache[1]
            if step not in cache:
                if len(cache) > 8:
                    cache.clear()
                cache[step] = self._lr_at(step, SCALAR)
            return cache[step]
        return self._lr_at(np.asarray(step, dtype=np.float64), np)

    def _lr_at(self, step: Any, xp: Any) -> Any:
        lr = self.shape.lr(step, self.switch_step, self.landing_lr, xp=xp)
        for start, peak in self.restarts:
            restarted = self.shape.decay_lr(step, peak, start, xp=xp)
            lr = xp.where(step >= start, restarted, lr)
        return lr

    def get_state(self) -> dict[str, Any]:
        return {
            "switch_step": self.switch_step,
            "peak_lr": self.landing_lr,
            "restarts": [list(r) for r in self.restarts],
            "revision": self.revision,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.switch_step = int(state["switch_step"])
        self.landing_lr = float(state["peak_lr"])
        self.restarts = [(int(s), float(p)) for s, p in state["restarts"]]
        self.revision = int(state["revision"])
        self._cache = (-1, {})
