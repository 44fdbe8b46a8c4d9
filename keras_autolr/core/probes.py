"""The landing LR chosen by measurement: short constant-LR probes.

Along the warmup ramp the loss keeps falling while the LR grows, so the
LR at the smoothed loss minimum mixes two effects: what the LR does, and
how far training has come. After warmup ends, the probes separate them:
each runs a short stretch at one constant LR from the same weights (the
copy the Keras callback put back), and the decay starts from the LR whose
loss fell furthest over its stretch.

The LRs are half a decade apart, from the LR at the smoothed minimum times
sqrt(10) (at most the highest LR the ramp ran) downwards, and run largest
first. Each probe holds its LR, then anneals it to 0 over half as many
steps, and is scored by its loss over the second half of the anneal: at a
constant LR the loss sits at a noise floor that grows with the LR, which
makes a short stretch favour small LRs (Wu et al., ICLR 2018); the anneal
removes that floor, as the decay at the end of the run does. A probe
replaces the choice so far only when its score is lower by more than twice
the standard error of the difference, so a tie goes to the larger LR. The
choice keeps the steps it ran (the callback keeps its weights), the other
probes' steps are spent.

Pure NumPy; the controller owns a `Probes` and reports each probe's end.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from keras_autolr.core.losses import to_json

# Spacing of the probe LRs: half a decade, the spacing of a tuning grid.
SPACING = math.sqrt(10.0)
# Share of the budget each probe holds its LR; the anneal adds half of it.
# Four probes then run 12 % of the budget and spend 9 % (the choice's
# steps are kept).
SHARE = 0.02
# Fewest steps a probe holds its LR: the second half of its anneal needs a
# few losses for a noise estimate.
MIN_STEPS = 16
# A probe replaces the choice when its loss is lower by more than this
# many standard errors of the difference (a one-sided test at ~2 %).
CLEARLY = 2.0
# Probes run only if the decay keeps at least this share of what remains
# after the switch.
KEEP = 0.75


def probe_steps(total_steps: int, unit: int) -> tuple[int, int]:
    """Steps a probe holds its LR (`SHARE` of the budget, at least
    `MIN_STEPS`) and anneals it (half as many), each a multiple of `unit`
    (where a bin and a chunk end)."""
    hold = max(SHARE * total_steps, MIN_STEPS)
    hold = unit * max(1, math.ceil(hold / unit))
    return hold, unit * max(1, math.ceil(hold / 2 / unit))


def probe_lrs(
    lr_at_minimum: float, ceiling: float, count: int, min_lr: float
) -> list[float]:
    """`count` LRs half a decade apart, largest first, from
    `lr_at_minimum * SPACING` or `ceiling` if lower; none below `min_lr`
    (at least one)."""
    top = min(lr_at_minimum * SPACING, ceiling)
    lrs = [top / SPACING**i for i in range(count)]
    return [lr for lr in lrs if lr >= min_lr] or [max(top, min_lr)]


def score(losses: np.ndarray, last: int) -> tuple[float, float]:
    """The mean of the `last` losses of a probe and its standard error;
    `(inf, inf)` if a loss of the probe is not finite."""
    losses = np.asarray(losses, dtype=np.float64)
    half = losses[len(losses) - last :] if last > 0 else losses[:0]
    if not half.size or not np.all(np.isfinite(losses)):
        return math.inf, math.inf
    spread = float(np.std(half, ddof=1)) if half.size > 1 else 0.0
    return float(np.mean(half)), spread / math.sqrt(half.size)


def clearly_lower(new: tuple, old: tuple) -> bool:
    """Whether the score `new` is lower than `old` beyond noise."""
    if not math.isfinite(new[0]):
        return False
    if not math.isfinite(old[0]):
        return True
    return new[0] + CLEARLY * math.hypot(new[1], old[1]) < old[0]


class Probes:
    """The probes of one run: their LRs, where each runs, the losses of the
    running one, and the choice so far.

    Args:
        hold: steps a probe holds its LR (`probe_steps`).
        anneal: steps it then anneals the LR to 0.
    """

    def __init__(self, hold: int, anneal: int) -> None:
        self.hold, self.anneal = int(hold), int(anneal)
        self.length = self.hold + self.anneal
        self.reset()

    def reset(self) -> None:
        self.lrs: list[float] = []
        self.start = 0  # First step of the running probe.
        self.index = 0  # The running probe, or len(lrs) once done.
        self.scores: list[tuple[float, float]] = []
        self.choice: int | None = None
        self._losses: list[float] = []
        self._scored = 0  # The last losses that score the probe.

    @property
    def running(self) -> bool:
        return self.index < len(self.lrs)

    @property
    def end(self) -> int:
        """The step after the running probe's last."""
        return self.start + self.length

    @property
    def anneal_start(self) -> int:
        """The running probe's first step of its anneal."""
        return self.start + self.hold

    @property
    def lr(self) -> float:
        """The running probe's LR, or the chosen LR once done."""
        if self.running:
            return self.lrs[self.index]
        return self.lrs[self.choice] if self.choice is not None else 0.0

    def begin(self, lrs: list[float], start: int) -> None:
        self.reset()
        self.lrs = [float(lr) for lr in lrs]
        self.start = int(start)

    def add(self, losses: np.ndarray, step: int) -> None:
        """Records the losses of steps of the running probe up to `step`
        (per step, or a chunk's mean), those of the second half of its
        anneal apart: they score it."""
        losses = [float(v) for v in np.ravel(losses)]
        first = self.end - self.anneal // 2
        if step > first:
            self._scored += min(len(losses), step - first)
        self._losses.extend(losses)

    def finish(self, step: int) -> dict[str, Any]:
        """Ends the running probe at `step` and updates the choice; returns
        its event."""
        result = score(np.asarray(self._losses), self._scored)
        chosen = self.choice is None or clearly_lower(
            result, self.scores[self.choice]
        )
        if chosen and math.isfinite(result[0]):
            self.choice = self.index
        else:
            chosen = False
        self.scores.append(result)
        event = {
            "step": int(step),
            "event": "probe",
            "lr": self.lrs[self.index],
            "loss": to_json(result[0]),
            "se": to_json(result[1]),
            "chosen": chosen,
        }
        self.index += 1
        self.start = int(step)
        self._losses, self._scored = [], 0
        event["last"] = not self.running
        return event

    def get_state(self) -> dict[str, Any]:
        return {
            "lrs": self.lrs,
            "start": self.start,
            "index": self.index,
            "scores": [[to_json(m), to_json(s)] for m, s in self.scores],
            "choice": self.choice,
            "losses": [to_json(v) for v in self._losses],
            "scored": self._scored,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.lrs = [float(v) for v in state["lrs"]]
        self.start = int(state["start"])
        self.index = int(state["index"])
        self.scores = [(_number(m), _number(s)) for m, s in state["scores"]]
        choice = state["choice"]
        self.choice = None if choice is None else int(choice)
        self._losses = [_number(v) for v in state["losses"]]
        self._scored = int(state["scored"])
        if not 0 <= self.index <= len(self.lrs) or len(self.scores) != min(
            self.index, len(self.lrs)
        ):
            raise ValueError("inconsistent probe state")


def _number(value: Any) -> float:
    """A float from a JSON value (`None` for a non-finite one)."""
    return math.inf if value is None else float(value)
