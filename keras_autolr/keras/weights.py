"""Host copies of the weights from near the loss minimum, and which to keep.

When warmup ends past the loss minimum, or the loss blows up during decay,
rolling back the LR alone does not undo the damage the high LR did to the
weights: AutoLR puts back a copy of the weights and optimizer state taken
while the loss was at its lowest. `WeightSnapshot` is one such copy;
`WeightKeeper` decides when to take one and which to put back.
"""

import numpy as np

from keras_autolr.keras import compat
from keras_autolr.keras.backup import WEIGHT_FILES, WEIGHT_STEPS

# During warmup, at most this many tests between two copies while the loss
# falls (a copy at every test would cost more than the tests).
_COPY_EVERY = 4
# During warmup, no new copy once the LR is this many times the LR at the
# smoothed loss minimum: a low loss that far past it is a noise low, and
# the weights may already be damaged.
_COPY_WITHIN = 2.0
# The key of a saved state holding the number of warmup tests run when the
# last copy was taken: copies at tests keep their cadence from it, so a
# restarted run needs it to take the same copies.
COPY_TEST = "weight_copy_test"


class WeightSnapshot:
    """Keeps a host copy of a model's weights and its optimizer's state.

    The optimizer's step counter and learning-rate variable are left out:
    restoring must not move the schedule back in time.

    Memory: one copy of the model weights plus the optimizer slots (for
    Adam-type optimizers, 3x the model size) in host RAM.

    Args:
        model: a compiled Keras model. Its optimizer may be built later
            (Keras builds it at the first train step): each copy takes the
            variables that exist when it is taken.
    """

    def __init__(self, model):
        self.model = model
        self._variables = None
        self._values = None
        self.step = None

    @property
    def taken(self):
        return self._values is not None

    def take(self, step):
        """Copies the current weights if they are all finite."""
        compat.sync_variables(self.model)
        variables = snapshot_variables(self.model)
        values = compat.read_values(variables)
        if not all_finite(values):
            return False
        self._variables, self._values = variables, values
        self.step = step
        return True

    @property
    def values(self):
        """The copied arrays (weights, then optimizer state), or `None`."""
        return self._values

    def load(self, step, values):
        """Takes a copy read back from disk (`values` as in `values`).

        It is matched to the model's variables when restored: after a
        restart the optimizer may not be built yet.
        """
        self._variables, self._values = None, list(values)
        self.step = step

    def restore(self):
        """Writes the copy back into the model and optimizer.

        Raises:
            ValueError: if a copy read back from disk does not fit the
                model's variables (another model, or another optimizer).
        """
        compat.sync_variables(self.model)
        variables = self._variables or snapshot_variables(self.model)
        shapes = [tuple(v.shape) for v in variables]
        if shapes != [a.shape for a in self._values]:
            raise ValueError(
                f"The weight copy of step {self.step} has {len(self._values)} "
                f"arrays that do not fit the model and optimizer "
                f"({len(variables)} variables): was `backup_dir` written by "
                "another model or optimizer? Give this run its own "
                "`backup_dir`."
            )
        for variable, value in zip(variables, self._values, strict=True):
            variable.assign(value)

    def release(self):
        self._variables = None
        self._values = None


class WeightKeeper:
    """Keeps copies of the weights while the loss is at its lowest.

    The loss of a step is measured before its update, so the weights copied
    now are judged only by the losses that follow: a copy is pending until
    the next offer still finds the loss at its lowest, and dropped if not
    (at the edge of a cliff, the last update is often the one that blew
    up). Confirmed copies are kept on a ladder: the newest, and during
    warmup the newest older one taken at or below the LR of the latest
    smoothed minimum (else the oldest kept).

    A rollback at the end of warmup puts back the newest copy taken at or
    below the LR of the smoothed loss minimum: a low loss past it is often
    a noise low in the overshoot, with weights the high LR has already
    damaged. Other rollbacks put back the newest confirmed copy, or the
    pending one if none is. Host memory: up to three copies of the model
    and optimizer state.

    It decides from the controller's `Report`s, and never sees the
    controller.

    Args:
        model: a compiled Keras model.
        ramp_lr_at: the LR of a step along the warmup ramp
            (`AutoLRController.ramp_lr_at`).
    """

    def __init__(self, model, ramp_lr_at):
        self.model = model
        self.ramp_lr_at = ramp_lr_at
        self.ladder = []  # Confirmed copies, oldest first; at most 2.
        self.pending = WeightSnapshot(model)
        self._tests_at_copy = 0

    @property
    def confirmed(self):
        """The newest confirmed copy (not `taken` when there is none)."""
        return self.ladder[-1] if self.ladder else WeightSnapshot(self.model)

    def offer(self, report, at_test=False):
        """Takes a copy now if the loss is at its lowest, after the
        controller's latest `report`.

        At a test (`at_test`), a copy is taken only when the detector sees
        the minimum coming (its probability is at least 0.5) or the last
        one is `_COPY_EVERY` tests old.
        """
        skip = (
            at_test
            and report.tests_run - self._tests_at_copy < _COPY_EVERY
            and (report.probability or 0.0) < 0.5
        )
        if skip and not self.pending.taken:
            return  # Nothing to confirm, and no copy to take.
        if not report.at_lowest_loss:
            self.pending.release()
            return
        if self.pending.taken:
            self._confirm(report)
        if skip:
            return
        if _past_minimum(report, _COPY_WITHIN):
            return
        if self.pending.take(report.steps):
            self._tests_at_copy = report.tests_run

    def _confirm(self, report):
        """Moves the pending copy onto the ladder as its newest copy. During
        warmup, the ladder also keeps the newest older copy taken at or
        below the LR of the latest smoothed minimum (else its oldest), for
        when the newest turns out to lie past the minimum."""
        new, self.pending = self.pending, WeightSnapshot(self.model)
        lowest = report.lr_at_minimum
        ramp = self.ramp_lr_at
        down = None
        if (
            report.phase == "warmup"
            and lowest is not None
            and self.ladder
            and float(ramp(new.step)) > lowest
        ):
            below = [c for c in self.ladder if float(ramp(c.step)) <= lowest]
            down = below[-1] if below else self.ladder[0]
        for copy in self.ladder:
            if copy is not down:
                copy.release()
        self.ladder = [new] if down is None else [down, new]

    def restore(self, max_lr=None):
        """Puts back a copy; returns the step it was taken at, or `None` if
        there is none.

        With `max_lr`, the newest confirmed copy taken at a ramp LR of at
        most `max_lr`, else the oldest; without, the newest confirmed copy.
        The pending copy when none is confirmed.
        """
        ramp_lr_at = self.ramp_lr_at
        if not self.ladder:
            if not self.pending.taken:
                return None
            self.pending.restore()
            return self.pending.step
        chosen = self.ladder[-1]
        if max_lr is not None:
            fit = [
                c for c in self.ladder if float(ramp_lr_at(c.step)) <= max_lr
            ]
            chosen = fit[-1] if fit else self.ladder[0]
        chosen.restore()
        return chosen.step

    @property
    def taken(self):
        return bool(self.ladder) or self.pending.taken

    def save(self, store):
        """Writes the copies to the `StateStore` `store`; returns the
        entries of the state that names them: their steps under
        `WEIGHT_STEPS` (the ladder's, oldest first, then the pending copy's
        or `None`), their sizes and checksums under `WEIGHT_FILES`, and
        the test count of the last copy under `COPY_TEST`.

        Raises:
            OSError: a copy could not be written.
        """
        files = {}
        for snapshot in (*self.ladder, self.pending):
            if snapshot.taken:
                record = store.save_weights(snapshot.step, snapshot.values)
                files[str(snapshot.step)] = record
        pending = self.pending.step if self.pending.taken else None
        steps = [c.step for c in self.ladder] + [pending]
        return {
            WEIGHT_STEPS: steps,
            WEIGHT_FILES: files,
            COPY_TEST: self._tests_at_copy,
        }

    def load(self, store, state):
        """Reads back the copies that `state` (from `store`) names, so that
        a restarted run rolls back to the same weights. Every copy is read
        and checked before any is kept.

        Raises:
            BackupError: a copy is missing, damaged, or does not fit the
                model and optimizer.
        """
        files = state.get(WEIGHT_FILES) or {}
        copies = []
        for step in state.get(WEIGHT_STEPS) or [None]:
            if step is None:
                copies.append(None)
                continue
            values = store.load_weights(step, files.get(str(step)))
            snapshot = WeightSnapshot(self.model)
            snapshot.load(step, values)
            copies.append(snapshot)
        *ladder, pending = copies
        self.ladder = [c for c in ladder if c is not None]
        self.pending = pending or WeightSnapshot(self.model)
        self._tests_at_copy = int(state.get(COPY_TEST, 0))

    def release(self):
        for snapshot in (*self.ladder, self.pending):
            snapshot.release()
        self.ladder = []


def _past_minimum(report, factor):
    """Whether warmup has carried the LR of the last step run past `factor`
    times the LR at the smoothed loss minimum of the latest test."""
    lowest = report.lr_at_minimum
    if report.phase != "warmup" or lowest is None or not report.steps:
        return False
    return report.last_lr > factor * lowest


def fingerprint(model):
    """What a saved state records of the model and optimizer it belongs
    to: each weight's name, shape and dtype, in order, and the class of
    the optimizer that applies the updates."""
    optimizer = compat.inner_optimizer(model.optimizer)
    return {
        "weights": [
            [v.name, [int(d) for d in v.shape], str(v.dtype)]
            for v in model.weights
        ],
        "optimizer": type(optimizer).__name__,
    }


def fingerprint_difference(saved, current):
    """In words, how the `fingerprint` `saved` differs from `current`, or
    `None` if they match."""
    if saved["optimizer"] != current["optimizer"]:
        return (
            f"its optimizer is a {saved['optimizer']}, this run's a "
            f"{current['optimizer']}"
        )
    mine, theirs = current["weights"], saved["weights"]
    for i, (a, b) in enumerate(zip(theirs, mine, strict=False)):
        if list(a) != list(b):
            return (
                f"its weight {i} is {a[0]} {tuple(a[1])} {a[2]}, this "
                f"model's is {b[0]} {tuple(b[1])} {b[2]}"
            )
    if len(theirs) != len(mine):
        return f"its model has {len(theirs)} weights, this one {len(mine)}"
    return None


def snapshot_variables(model):
    """The model's weights, then its optimizer's state, without the step
    counter, the learning-rate variable and AutoLR's own schedule variables
    (optimizer state on JAX): restoring must not move the schedule."""
    optimizer = model.optimizer
    inner = compat.inner_optimizer(optimizer)
    lr = compat.learning_rate_variable(optimizer)
    skip = {id(inner.iterations), id(lr)}
    return list(model.weights) + [
        v
        for v in optimizer.variables
        if id(v) not in skip and not v.name.startswith("autolr_")
    ]


def current_weights(model):
    """The model's weights as NumPy arrays, also during `fit` on JAX."""
    compat.sync_variables(model)
    return [compat.to_numpy(v) for v in model.weights]


def all_finite(arrays):
    return all(np.all(np.isfinite(a)) for a in arrays)
