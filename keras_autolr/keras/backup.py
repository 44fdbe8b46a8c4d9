"""The files of `backup_dir`: the controller state after each epoch, and the
weight copies that the states name, each checked before it is used.

No Keras. Each file is written to a temporary name, flushed to disk and
renamed over the final name, so a process killed during a save leaves
either the previous files or the new one, never a torn file. The last few
epochs are kept, so the state that matches a model checkpoint saved a
little earlier or later (e.g. by `keras.callbacks.BackupAndRestore`) is
still there, with the weight copies it names. A state records the size and
SHA-256 of each copy it names, and a fingerprint of the model and optimizer
that wrote it: a file that is damaged, missing or another model's raises a
`BackupError` that names it, and nothing is read from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
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
# The key of a saved state that holds the size and SHA-256 of each copy it
# names, by step.
WEIGHT_FILES = "weight_files"
# The key of a saved state that describes the model and optimizer it
# belongs to (`keras_autolr.keras.weights.fingerprint`).
FINGERPRINT = "fingerprint"


class BackupError(ValueError):
    """A file of `backup_dir` that AutoLR cannot resume from: damaged,
    missing, or written by another model or optimizer. The message names
    the file, says what is wrong and what to do."""


def write_failed(directory: str, error: BaseException) -> str:
    """The warning when AutoLR cannot write to `directory`."""
    return (
        f"AutoLR could not write its state to backup_dir {directory} "
        f"({type(error).__name__}: {error}). Training goes on; the last "
        "state written there stays as it was, and the next epoch end tries "
        "again."
    )


def what_to_do(directory: str) -> str:
    """The advice that ends every `BackupError` about `directory`."""
    return (
        "Resume from an intact `backup_dir` (the one the interrupted run "
        "wrote), or start a new schedule by fitting from epoch 0, which "
        f"clears AutoLR's files in {directory}."
    )


class StateStore:
    """A directory of AutoLR states keyed by the number of completed epochs.

    The directory is created at the first save (or by `ensure()`).

    Args:
        directory: where the files live.
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
        # The size and checksum of each weight copy this store wrote.
        self._records: dict[int, dict[str, Any]] = {}

    def ensure(self) -> None:
        """Creates the directory if needed and deletes the temporary files
        of a save that was killed.

        Raises:
            OSError: the directory cannot be created or listed.
        """
        os.makedirs(self.directory, exist_ok=True)
        for name in os.listdir(self.directory):
            if name.startswith(".autolr-") and name.endswith(".tmp"):
                os.unlink(os.path.join(self.directory, name))

    def path(self, epochs_done: int) -> str:
        return os.path.join(self.directory, _NAME.format(epochs_done))

    def epochs(self) -> list[int]:
        """Completed-epoch counts that have a state, oldest first."""
        return self._numbers(_PATTERN)

    def save(self, epochs_done: int, state: dict[str, Any]) -> None:
        """Atomically writes the state after `epochs_done` epochs.

        Then deletes the states beyond the newest `keep`, and the weight
        copies that no kept state names under `WEIGHT_STEPS`.

        Raises:
            OSError: a file could not be written; the files written before
                are as they were.
        """
        data = json.dumps(state).encode("utf-8")
        self._write(self.path(epochs_done), data)
        self._named[epochs_done] = _weight_steps(state)
        for old in self.epochs()[: -self.keep]:
            os.unlink(self.path(old))
            self._named.pop(old, None)
        named = set()
        for epoch in self.epochs():
            if epoch not in self._named:
                self._named[epoch] = _weight_steps(self._read_or_none(epoch))
            named.update(self._named[epoch])
        for step in self.weight_steps():
            if step not in named:
                os.unlink(self.weights_path(step))
                self._records.pop(step, None)

    def clear(self) -> None:
        """Deletes every state and weight copy: a new run starts."""
        if not os.path.isdir(self.directory):
            return
        for epoch in self.epochs():
            os.unlink(self.path(epoch))
        for step in self.weight_steps():
            os.unlink(self.weights_path(step))
        self._named.clear()
        self._records.clear()

    def weights_path(self, step: int) -> str:
        return os.path.join(self.directory, _WEIGHTS.format(step))

    def weight_steps(self) -> list[int]:
        """Steps that have a weight copy, oldest first."""
        return self._numbers(_WEIGHTS_PATTERN)

    def _numbers(self, pattern: re.Pattern) -> list[int]:
        """The numbers in the names of the files matching `pattern`, sorted."""
        if not os.path.isdir(self.directory):
            return []
        names = (pattern.match(name) for name in os.listdir(self.directory))
        return sorted(int(match.group(1)) for match in names if match)

    def save_weights(self, step: int, arrays: list[np.ndarray]) -> dict:
        """Atomically writes the copy taken at `step`, unless this store
        wrote it already (a copy is never retaken at the same step).

        Returns:
            Its record for the state: `{"bytes": size, "sha256": digest}`.

        Raises:
            OSError: the file could not be written.
        """
        path = self.weights_path(step)
        if step in self._records and os.path.exists(path):
            return self._records[step]
        buffer = io.BytesIO()
        np.savez(buffer, **{f"a{i:05d}": a for i, a in enumerate(arrays)})
        data = buffer.getvalue()
        self._write(path, data)
        self._records[step] = _record_of(data)
        return self._records[step]

    def load_weights(
        self, step: int, record: dict[str, Any] | None = None
    ) -> list[np.ndarray]:
        """The copy taken at `step`, checked against its `record` from the
        state that names it (states written before records existed have
        none: the file is then only checked to be readable).

        Raises:
            BackupError: the file is missing, of another size or checksum,
                or not a readable copy.
        """
        path = self.weights_path(step)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise self._error(path, "is missing") from None
        except OSError as error:
            raise self._error(path, f"cannot be read ({error})") from error
        if record is not None:
            if len(data) != record.get("bytes"):
                raise self._error(
                    path,
                    f"is damaged: {len(data)} bytes where the state that "
                    f"names it records {record.get('bytes')}",
                )
            if _record_of(data)["sha256"] != record.get("sha256"):
                raise self._error(
                    path,
                    "is damaged: its SHA-256 checksum differs from the one "
                    "the state that names it records",
                )
        try:
            with np.load(io.BytesIO(data)) as archive:
                arrays = [archive[name] for name in sorted(archive.files)]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise self._error(
                path, f"is not a readable weight copy ({error})"
            ) from error
        self._records[step] = _record_of(data)
        return arrays

    def load(self, epochs_done: int) -> dict[str, Any] | None:
        """The state saved after `epochs_done` epochs, or `None` if there
        is no such file.

        Raises:
            BackupError: the file is not a state that AutoLR wrote
                (truncated, not UTF-8, not JSON, not a JSON object).
        """
        path = self.path(epochs_done)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise self._error(path, f"cannot be read ({error})") from error
        try:
            state = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise self._error(
                path, "is damaged: it is not UTF-8 text"
            ) from None
        except json.JSONDecodeError as error:
            raise self._error(
                path, f"is damaged: it is not complete JSON ({error})"
            ) from None
        if not isinstance(state, dict):
            raise self._error(
                path, f"is not an AutoLR state: a JSON {type(state).__name__}"
            )
        return state

    def error(self, epochs_done: int, what: str) -> BackupError:
        """A `BackupError` about the state after `epochs_done` epochs."""
        return self._error(self.path(epochs_done), what)

    def _error(self, path: str, what: str) -> BackupError:
        return BackupError(
            f"AutoLR cannot resume from {path}: the file {what}. "
            + what_to_do(self.directory)
        )

    def _read_or_none(self, epochs_done: int) -> dict[str, Any] | None:
        """The state, or `None` where it is missing or damaged (it then
        names no copy worth keeping)."""
        try:
            return self.load(epochs_done)
        except BackupError:
            return None

    def _write(self, path: str, data: bytes) -> None:
        self.ensure()
        fd, tmp = tempfile.mkstemp(
            prefix=".autolr-", suffix=".tmp", dir=self.directory
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_directory(self.directory)


def _record_of(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _weight_steps(state: dict[str, Any] | None) -> tuple[int | None, ...]:
    steps = (state or {}).get(WEIGHT_STEPS) or ()
    return tuple(s for s in steps if s is None or isinstance(s, int))


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
