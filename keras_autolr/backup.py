"""Crash-safe files of the controller state, one per completed epoch.

Pure Python, no Keras. Each file is written to a temporary name, flushed to
disk and renamed over the final name, so a process killed during a save
leaves either the previous files or the new one, never a torn file. The last
few epochs are kept, so the state that matches a model checkpoint saved a
little earlier or later (e.g. by `keras.callbacks.BackupAndRestore`) is
still there.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

_NAME = "autolr-epoch-{:06d}.json"
_PATTERN = re.compile(r"^autolr-epoch-(\d{6})\.json$")


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
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(
                "Argument `keep` must be an integer >= 1. "
                f"Received: keep={keep!r}"
            )
        self.directory = os.fspath(directory)
        self.keep = keep
        os.makedirs(self.directory, exist_ok=True)
        for name in os.listdir(self.directory):
            if name.startswith(".autolr-") and name.endswith(".tmp"):
                os.unlink(os.path.join(self.directory, name))  # Killed save.

    def path(self, epochs_done: int) -> str:
        return os.path.join(self.directory, _NAME.format(epochs_done))

    def epochs(self) -> list[int]:
        """Completed-epoch counts that have a state, oldest first."""
        found = []
        for name in os.listdir(self.directory):
            match = _PATTERN.match(name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, epochs_done: int, state: dict[str, Any]) -> None:
        """Atomically writes the state after `epochs_done` epochs."""
        fd, tmp = tempfile.mkstemp(
            prefix=".autolr-", suffix=".tmp", dir=self.directory
        )
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(epochs_done))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)
        for old in self.epochs()[: -self.keep]:
            os.unlink(self.path(old))

    def load(self, epochs_done: int) -> dict[str, Any] | None:
        """The state saved after `epochs_done` epochs, or `None`."""
        try:
            with open(self.path(epochs_done)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None


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
