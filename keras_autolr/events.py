"""The decisions of a run, as events, and what one update decided.

Every decision the controller makes (the switch that ends warmup, each
rescue that restarts the decay) is appended to an `EventLog` as a dict
with at least `step` and `event`; it is part of the controller's state.
Each `update()` returns a `Report` of the events it added.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Report:
    """What one `update()` or `skip()` did.

    Attributes:
        lr: the LR of the next step.
        tested: a test of the loss minimum started at this update.
        switch: the event that ended warmup at this update, else `None`.
        rescue: the event that restarted the decay at this update, else
            `None`.
    """

    lr: float
    tested: bool = False
    switch: dict[str, Any] | None = None
    rescue: dict[str, Any] | None = None


class EventLog:
    """The events of a run, in order; every read returns copies."""

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

    def get_state(self) -> list[dict[str, Any]]:
        return self.all()

    def set_state(self, state: list[dict[str, Any]]) -> None:
        self._events = [dict(e) for e in state]
