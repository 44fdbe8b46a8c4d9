"""The read-only views of `AutoLRController`: where its schedule stands,
what it decided, and the `Report` of each update.

`ControllerViews` reads the parts that `AutoLRController` owns
(`settings`, `shape`, `_record`, `_decisions`, `_tests`, `_events`) and
changes none of them; the controller inherits it.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from keras_autolr.core import losses as stats
from keras_autolr.core import options, schedule
from keras_autolr.core.events import DECAY, WARMUP, Report


class ControllerViews:
    """What an `AutoLRController` shows; documented with it."""

    @property
    def total_steps(self) -> int:
        """The step budget; the LR is 0 from this step on."""
        return self.settings.total_steps

    @property
    def ramp_steps(self) -> int:
        """The warmup cap, in steps."""
        return self.settings.ramp_steps

    @property
    def steps(self) -> int:
        """Number of steps whose loss has been observed."""
        return self._record.steps

    @property
    def phase(self) -> str:
        """`"warmup"` before the switch step, `"decay"` from it on."""
        return WARMUP if self.steps < self._decisions.switch_step else DECAY

    @property
    def switch_step(self) -> int:
        """First step of the decay (the warmup cap until a decision)."""
        return self._decisions.switch_step

    @property
    def landing_lr(self) -> float:
        """The LR the decay starts from (provisional during warmup): below
        the ramp's highest LR, which overshoots the minimum."""
        return self._decisions.landing_lr

    @property
    def decay_start(self) -> int:
        """First step of the current decay: the switch, or the last
        restart."""
        return self._decisions.decay_start

    @property
    def revision(self) -> int:
        """Counts the changes of the schedule's decisions."""
        return self._decisions.revision

    @property
    def first_test_step(self) -> int:
        """The earliest step at which a test can run: `min_bins` bins."""
        settings = self.settings
        step = settings.min_bins * settings.bin_steps
        return -(-step // settings.check_every) * settings.check_every

    @property
    def switch_event(self) -> dict[str, Any] | None:
        """The event that ended warmup, once it has."""
        return self._events.first("switch")

    @property
    def lr_at_minimum(self) -> float | None:
        """LR at the smoothed loss minimum of the latest test, if any."""
        return self._tests.minimum_lr

    @property
    def tests_run(self) -> int:
        """Tests of the loss minimum started so far."""
        return self._tests.tests_run

    @property
    def detector_runs(self) -> int:
        """Tests acted on whose Gaussian process ran."""
        return self._tests.detector_runs

    @property
    def last_probability(self) -> float | None:
        """Mean past-minimum probability of the latest test acted on."""
        return self._tests.last_probability

    @property
    def lr(self) -> float:
        """LR of the next step, `self.steps`."""
        return float(self.lr_at(self.steps))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Decisions so far, each a dict with at least `step` and `event`."""
        return self._events.all()

    @property
    def rescues(self) -> list[dict[str, Any]]:
        """Decay restarts after the loss blew up during decay, in order."""
        return self._events.all("rescue")

    def lr_at(self, step: Any) -> Any:
        """LR of step(s) `step` under the decisions made so far."""
        return self._decisions.lr_at(step)

    def ramp_lr_at(self, step: Any) -> Any:
        """LR of ramp step(s) `step` (whether or not warmup ended there)."""
        return self.shape.warmup_lr(
            step, xp=np if np.ndim(step) else schedule.SCALAR
        )

    def loss_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The recorded losses as `(center_step, mean_loss, num_steps)` of
        each closed bin: read-only arrays."""
        return self._record.bins()

    def at_lowest_loss(self) -> bool:
        """Whether the loss is now within noise of its lowest level
        (`losses.at_lowest_loss`): the weights are worth keeping."""
        return stats.at_lowest_loss(self._record.bins()[1])

    def report(self) -> Report:
        """Where the schedule stands now, as the `Report` of an update that
        decided nothing."""
        return self._report()

    def _report(self, **decided: Any) -> Report:
        steps, decisions = self.steps, self._decisions
        return Report(
            lr=self.lr,
            steps=steps,
            phase=self.phase,
            switch_step=decisions.switch_step,
            decay_start=decisions.decay_start,
            decay_lr=decisions.decay_lr,
            revision=decisions.revision,
            tests_run=self._tests.tests_run,
            probability=self._tests.last_probability,
            lr_at_minimum=self._tests.minimum_lr,
            last_lr=float(self.lr_at(steps - 1)) if steps else None,
            _record=self._record,
            **decided,
        )


def _deprecated(name: str, new: str) -> property:
    """A read-only alias, for one release, of the view `new` (a dotted
    path from the controller)."""

    def getter(self: ControllerViews) -> Any:
        warnings.warn(
            f"`AutoLRController.{name}` is deprecated: use `{new}`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return functools.reduce(getattr, new.split("."), self)

    return property(getter, doc=f"Deprecated alias of `{new}`.")


# The names of release 0.2, kept for one release (CHANGELOG).
ControllerViews.peak_lr = _deprecated("peak_lr", "landing_lr")
ControllerViews.minimum_lr = _deprecated("minimum_lr", "lr_at_minimum")
for _name in options.FIELDS:
    if not hasattr(ControllerViews, _name):
        setattr(ControllerViews, _name, _deprecated(_name, f"settings.{_name}"))
