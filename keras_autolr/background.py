"""One worker thread that runs AutoLR's tests off the training thread.

A test (the statistics of the recorded losses and the Gaussian process) is
a pure function of a copy of the losses. The controller submits it here when
a test is due and takes its result one test later, so the training thread
never waits for it unless the test takes longer than `check_every` steps.
The result does not depend on when the thread runs it: decisions stay the
same in every process, and with `background=False`.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()
_EXECUTOR: list[Any] = [None, None]  # [executor, pid that made it]


class _Done:
    """A result computed on the calling thread, with a `Future`'s
    `result()`."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


def completed(value: Any) -> _Done:
    """A result known already, e.g. read back from a saved state."""
    return _Done(value)


def submit(fn: Callable[..., Any], *args: Any, background: bool = True):
    """Runs `fn(*args)` on the worker thread, or now if not `background`.

    Returns:
        An object whose `result()` returns `fn(*args)` (waiting for it if
        needed) or raises what it raised.
    """
    if not background:
        return _Done(fn(*args))
    return _executor().submit(fn, *args)


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process's worker, made again in a forked child (whose copy of
    the parent's executor has no thread behind it)."""
    with _LOCK:
        executor, pid = _EXECUTOR
        if executor is None or pid != os.getpid():
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="autolr-test"
            )
            _EXECUTOR[:] = [executor, os.getpid()]
        return executor
