"""The decisions that define an AutoLR schedule, and its LR at any step.

A `Plan` is the `schedules.Shape` of a run plus what the controller has
decided so far: the switch step, the peak LR, and the restarts of the
decay after a rescue. Every decision goes through it, and `revision`
counts them, so the in-graph schedule knows when to copy them to the
device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_autolr import schedules


class Plan:
    """The switch step, peak LR and decay restarts of a schedule.

    Args:
        shape: the ramp, decay and budget.
        cap: the switch step until a decision: the end of the ramp.
        peak_lr: the peak LR until a decision.
    """

    def __init__(self, shape: schedules.Shape, cap: int, peak_lr: float):
        self.shape = shape
        self.cap = int(cap)
        self.initial_peak_lr = float(peak_lr)
        self.reset()

    def reset(self) -> None:
        """Forgets every decision."""
        self.switch_step = self.cap
        self.peak_lr = self.initial_peak_lr
        self.restarts: list[tuple[int, float]] = []  # (step, peak LR)
        self.revision = 0
        self._cache: tuple[int, dict[float, float]] = (-1, {})

    def switch(self, step: int, peak_lr: float) -> None:
        """Ends warmup at `step`; the decay starts there from `peak_lr`."""
        self.switch_step = int(step)
        self.peak_lr = float(peak_lr)
        self.revision += 1

    def set_peak(self, peak_lr: float) -> None:
        """Moves the provisional peak LR (warmup goes on)."""
        if peak_lr != self.peak_lr:
            self.peak_lr = float(peak_lr)
            self.revision += 1

    def restart(self, step: int, peak_lr: float) -> None:
        """Restarts the decay at `step` from `peak_lr`."""
        self.restarts.append((int(step), float(peak_lr)))
        self.revision += 1

    @property
    def decay_start(self) -> int:
        """First step of the current decay: the switch, or the last
        restart."""
        return self.restarts[-1][0] if self.restarts else self.switch_step

    @property
    def decay_peak_lr(self) -> float:
        """LR at `decay_start`."""
        return self.restarts[-1][1] if self.restarts else self.peak_lr

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
                cache[step] = self._lr_at(step, schedules.SCALAR)
            return cache[step]
        return self._lr_at(np.asarray(step, dtype=np.float64), np)

    def _lr_at(self, step: Any, xp: Any) -> Any:
        lr = self.shape.lr(step, self.switch_step, self.peak_lr, xp=xp)
        for start, peak in self.restarts:
            restarted = self.shape.decay_lr(step, peak, start, xp=xp)
            lr = xp.where(step >= start, restarted, lr)
        return lr

    def get_state(self) -> dict[str, Any]:
        return {
            "switch_step": self.switch_step,
            "peak_lr": self.peak_lr,
            "restarts": [list(r) for r in self.restarts],
            "revision": self.revision,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.switch_step = int(state["switch_step"])
        self.peak_lr = float(state["peak_lr"])
        self.restarts = [(int(s), float(p)) for s, p in state["restarts"]]
        self.revision = int(state["revision"])
        self._cache = (-1, {})
