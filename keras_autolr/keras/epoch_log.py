"""What AutoLR knows of a run in epochs, beside the controller's steps: the
steps per epoch of its `fit`, and the validation loss of each epoch end
whose logs hold `val_loss`, with the optimizer steps done when it was
measured.

No Keras. Saved in each state file of `backup_dir`, as two keys beside the
controller's state, read back with it on resume, and drawn by
`keras_autolr.plot` (an epoch axis, and the validation losses).
"""

from __future__ import annotations

import math
from typing import Any

# The keys of a saved state that hold an `EpochLog`.
STEPS_PER_EPOCH = "steps_per_epoch"
VALIDATION_LOSSES = "validation_losses"


class EpochLog:
    """The steps per epoch of a run, and its validation losses.

    Args:
        steps_per_epoch: steps in one epoch of the run, or `None` where
            unknown. Defaults to `None`.
        validation_losses: `(step, val_loss)` pairs, `step` being the
            optimizer steps done when `val_loss` was measured. Defaults to
            `()`.

    Example:

    >>> log = EpochLog(steps_per_epoch=16)
    >>> log.add(16, {"loss": 0.9, "val_loss": 0.75})
    >>> log.add(32, {"loss": 0.8})
    >>> log.validation_losses
    ((16, 0.75),)
    >>> EpochLog.from_state(log.get_state()).validation_losses
    ((16, 0.75),)
    """

    def __init__(
        self,
        steps_per_epoch: int | None = None,
        validation_losses: tuple[tuple[int, float], ...] = (),
    ) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.validation_losses = tuple(validation_losses)

    def add(self, step: int, logs: dict[str, Any] | None) -> None:
        """Records `logs["val_loss"]`, where the logs hold it, as measured
        after `step` optimizer steps."""
        if logs and logs.get("val_loss") is not None:
            pair = (int(step), float(logs["val_loss"]))
            self.validation_losses = (*self.validation_losses, pair)

    def get_state(self) -> dict[str, Any]:
        """The log as JSON-compatible values (a non-finite loss as
        `None`), under `STEPS_PER_EPOCH` and `VALIDATION_LOSSES`."""
        return {
            STEPS_PER_EPOCH: self.steps_per_epoch,
            VALIDATION_LOSSES: [
                [step, value if math.isfinite(value) else None]
                for step, value in self.validation_losses
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochLog:
        """The log saved in `state` by `get_state()`; empty where `state`
        has none (a controller's own state).

        Raises:
            ValueError: the keys are there but do not hold a log.
        """
        steps = state.get(STEPS_PER_EPOCH)
        if steps is not None and not (_is_int(steps) and steps > 0):
            raise ValueError(
                f"The AutoLR state's `{STEPS_PER_EPOCH}` must be a positive "
                f"integer or None. Received: {steps!r}"
            )
        pairs = state.get(VALIDATION_LOSSES) or []
        if not isinstance(pairs, list) or not all(
            isinstance(p, list)
            and len(p) == 2
            and _is_int(p[0])
            and (p[1] is None or _is_number(p[1]))
            for p in pairs
        ):
            raise ValueError(
                f"The AutoLR state's `{VALIDATION_LOSSES}` must be a list of "
                f"[step, loss] pairs. Received: {pairs!r:.200}"
            )
        losses = [(s, math.nan if v is None else float(v)) for s, v in pairs]
        return cls(steps, tuple(losses))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
