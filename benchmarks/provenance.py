"""The machine and versions behind a benchmark result, for the record."""

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np


def environment(**versions: str) -> dict:
    """Date, CPUs, Python, NumPy and the command line, plus `versions`
    (e.g. `tensorflow=tf.__version__`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # Not Linux.
        cpus = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "nproc": cpus,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        **versions,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }
