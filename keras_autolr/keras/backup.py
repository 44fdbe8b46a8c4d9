"""Crash-safe files of the controller state, one per completed epoch, and of
the weight copies that the states refer to.

No Keras. Each file is written to a temporary name, flushed to disk and
renamed over the final name, so a process killed during a save leaves
either the previous files or the new one, never a torn file. The last few
epochs are kept, so the state that matches a model checkpoint saved a
little earlier or later (e.g. by `keras.callbacks.BackupAndRestore`) is
still there, with the weight copies it names.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

import numpy as np

from keras_autolr.core import checks as check

_NAME = "autolr-epoch-{:06d}.json"
_PATTERN = re.compile(r"^autolr-epoch-(\d{6})\.json$")
_WEIGHTS = "autolr-weights-{:09d}.npz"
_WEIGHTS_PATTERN = re.compile(r"^autolr-weights-(\d{9})\.npz$")
# The key of a saved state that names its weight copies: a list of steps,
# `None` for a copy that was not taken.
WEIGHT_STEPS = "weight_steps"


class StateStore:
    """A directory of AutoLR states keyed by the number of completed epochs.

    Args:
        directory: where the files live; created if missing.
        keep: how many of the newest files to keep. Defaults to `3`.

    Example:

    >>> store = StateStore("/tmp/autolr-example")
    >>> store.save(1, {"steps": 100})
    >>> store.load(1)
    {'steps': 100}
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        check.check_int("keep", keep, 1)
        self.directory = os.fspath(directory)
        self.keep = keep
        # The weight steps named by each state this store wrote or read:
        # an epoch end then reads no state back from disk.
        self._named: dict[int, tuple[int | None, ...]] = {}
        os.makedirs(self.directory, exist_ok=True)
        for name in os.listdir(self.directory):
            if name.startswith(".autolr-") and name.endswith(".tmp"):
                os.unlink(os.path.join(self.directory, name))  # Killed save.

    def path(self, epochs_done: int) -> str:
        return os.path.join(self.directory, _NAME.format(epochs_done))

    def epochs(self) -> list[int]:
        """Completed-epoch counts that have a state, oldest first."""
        return self._numbers(_PATTERN)

    def save(self, epochs_done: int, state: dict[str, Any]) -> None:
        """Atomically writes the state after `epochs_done` epochs.

        Then deletes the states beyond the newest `keep`, and the weight
        copies that no kept state names under `WEIGHT_STEPS`.
        """
        self._write(self.path(epochs_done), "w", lambda f: json.dump(state, f))
        self._named[epochs_done] = _weight_steps(state)
        for old in self.epochs()[: -self.keep]:
            os.unlink(self.path(old))
            self._named.pop(old, None)
        named = set()
        for epoch in self.epochs():
            if epoch not in self._named:
                self._named[epoch] = _weight_steps(self.load(epoch))
            named.update(self._named[epoch])
        for step in self.weight_steps():
            if step not in named:
                os.unlink(self.weights_path(step))

    def clear(self) -> None:
        """Deletes every state and weight copy: a new run starts."""
        for epoch in self.epochs():
            os.unlink(self.path(epoch))
        for step in self.weight_steps():
            os.unlink(self.weights_path(step))
        self._named.clear()

    def weights_path(self, step: int) -> str:
        return os.path.join(self.directory, _WEIGHTS.format(step))

    def weight_steps(self) -> list[int]:
        """Steps that have a weight copy, oldest first."""
        return self._numbers(_WEIGHTS_PATTERN)

    def _numbers(self, pattern: re.Pattern) -> list[int]:
        """The numbers in the names of the files matching `pattern`, sorted."""
        names = (pattern.match(name) for name in os.listdir(self.directory))
        return sorted(int(match.group(1)) for match in names if match)

    def save_weights(self, step: int, arrays: list[np.ndarray]) -> None:
        """Atomically writes the copy taken at `step`, unless it exists
        (a copy is never retaken at the same step)."""
        path = self.weights_path(step)
        if os.path.exists(path):
            return
        named = {f"a{i:05d}": a for i, a in enumerate(arrays)}
        self._write(path, "wb", lambda f: np.savez(f, **named))

    def load_weights(self, step: int) -> list[np.ndarray] | None:
        """The copy taken at `step`, or `None`."""
        try:
            with np.load(self.weights_path(step)) as data:
                return [data[name] for name in sorted(data.files)]
        except FileNotFoundError:
            return None

    def _write(self, path: str, mode: str, write: Any) -> None:
        fd, tmp = tempfile.mkstemp(
            prefix=".autolr-", suffix=".tmp", dir=self.directory
        )
        try:
            with os.fdopen(fd, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)

    def load(self, epochs_done: int) -> dict[str, Any] | None:
        """The state saved after `epochs_done` epochs, or `None`."""
        try:
            with open(self.path(epochs_done)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None


def _weight_steps(state: dict[str, Any] | None) -> tuple[int | None, ...]:
    return tuple((state or {}).get(WEIGHT_STEPS) or ())


def _fsync_directory(directory: str) -> None:
    """Makes the rename itself durable (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
