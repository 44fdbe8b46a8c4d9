"""What the controller tells its callers: the events of a run, and the
`Report` of each update.

Every decision (the switch that ends warmup, each rescue that restarts the
decay) is appended to an `EventLog` as a dict with at least `step` and
`event`; the log is part of the controller's state. Each update returns a
`Report` of the events it added and of where the schedule stands.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from keras_autolr.core import losses
from keras_autolr.core.losses import LossRecord

WARMUP = "warmup"
DECAY = "decay"


@dataclasses.dataclass(frozen=True)
class Report:
    """What one `update()` or `skip()` did, and where the schedule stands.

    Everything a caller acts on (the Keras adapter: the LR, the weight
    copies, the in-graph schedule) is here, so that no caller reads the
    controller's parts.

    Attributes:
        lr: the LR of the next step.
        tested: a test of the loss minimum started at this update.
        switch: the event that ended warmup at this update, else `None`.
        rescue: the event that restarted the decay at this update, else
            `None`.
        steps: steps whose loss has been observed.
        phase: `"warmup"` or `"decay"`, for the next step.
        switch_step: first step of the decay (the cap until a decision).
        decay_start: first step of the current decay: the switch, or the
            last restart.
        decay_lr: the LR at `decay_start`.
        revision: counts the changes of the schedule's decisions.
        tests_run: tests of the loss minimum started so far.
        probability: the mean past-minimum probability of the posteriors of
            the latest test acted on, `None` before one ran.
        lr_at_minimum: the LR at the smoothed loss minimum of the latest
            test acted on, `None` before one.
        last_lr: the LR of the last step run (`lr_at(steps - 1)`).
    """

    lr: float
    tested: bool = False
    switch: dict[str, Any] | None = None
    rescue: dict[str, Any] | None = None
    steps: int = 0
    phase: str = WARMUP
    switch_step: int = 0
    decay_start: int = 0
    decay_lr: float = 0.0
    revision: int = 0
    tests_run: int = 0
    probability: float | None = None
    lr_at_minimum: float | None = None
    last_lr: float | None = None
    _record: LossRecord | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    @functools.cached_property
    def at_lowest_loss(self) -> bool:
        """Whether the loss is now within noise of its lowest level
        (`losses.at_lowest_loss`): the weights are worth keeping. Computed
        on first use, which must come before the controller's next update.
        """
        record = self._record
        if record is None:
            return False
        if record.steps != self.steps:
            raise RuntimeError(
                "Report.at_lowest_loss is known only until the next update "
                "of the controller that made the report."
            )
        return bool(losses.at_lowest_loss(record.bins()[1]))


class EventLog:
    """The decisions of a run, in order, each a dict with at least `step`
    and `event`; part of the controller's state. Every read returns
    copies."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: dict[str, Any]) -> None:
        self._events.append(dict(event))

    def all(self, kind: str | None = None, since: int = 0):
        """The events from number `since` on, of `kind` (e.g. "switch")
        if given."""
        return [
            dict(e)
            for e in self._events[since:]
            if kind is None or e["event"] == kind
        ]

    def first(self, kind: str, since: int = 0) -> dict[str, Any] | None:
        """The first event of `kind` from number `since` on, if any."""
        found = self.all(kind, since)
        return found[0] if found else None

    def last(self) -> dict[str, Any]:
        """The latest event itself (not a copy), for its maker to complete."""
        return self._events[-1]

    def get_state(self) -> list[dict[str, Any]]:
        return self.all()

    def set_state(self, state: list[dict[str, Any]]) -> None:
        self._events = [dict(e) for e in state]
