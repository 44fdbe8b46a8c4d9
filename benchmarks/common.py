"""What every benchmark script shares: the provenance of a result (machine,
versions, code, command), the threads of a TensorFlow process, number
formats, Markdown tables, and the writing of a result's JSON and Markdown.
"""

import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache"


def code_version():
    """The git commit of the checkout, and whether keras_autolr/ differs."""

    def git(*args):
        try:
            result = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True
            )
        except OSError:  # No git.
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "keras_autolr")
    return commit + (" + uncommitted changes in keras_autolr/" if dirty else "")


def command_line():
    """The command as typed: `python -m benchmarks.NAME ARGS`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = ["python", "-m", spec.name] if spec else ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def environment(**versions):
    """The provenance of a result: date, CPUs, Python, NumPy, Keras and
    TensorFlow where installed, Keras's backend where loaded, the code
    version and the command line, plus
    `versions` (e.g. `scipy=scipy.__version__`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # Not Linux.
        cpus = os.cpu_count()
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "nproc": cpus,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for key, package in (
        ("keras", "keras"),
        ("tensorflow", "tensorflow"),
        ("tensorflow", "tensorflow-cpu"),
    ):
        try:
            env[key] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    if "keras" in sys.modules:  # Imported here only where it was already.
        env["backend"] = sys.modules["keras"].backend.backend()
    env.update(versions)
    env.update(code=code_version(), command=command_line())
    return env


def describe_environment(env):
    """One line for a report: a provenance dict, or an older record's
    string as it is."""
    if isinstance(env, str):
        return env
    keras = f", Keras {env['keras']}" if "keras" in env else ""
    if "backend" in env:
        keras += f" ({env['backend']})"
    workers = ""
    if "workers" in env:
        workers = f"{env['workers']} worker(s) x {env['threads']} thread(s), "
    return (
        f"Python {env['python']}{keras}, NumPy {env['numpy']}, "
        f"{workers}{env['nproc']} CPUs, {env['machine']}."
    )


def configure_threads(threads):
    """TensorFlow's intra- and inter-op threads of this process."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def finite(value):
    """`value` as a float, None where not finite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value, spec=".4g"):
    """`value` formatted, "nan" for None."""
    return "nan" if value is None else format(value, spec)


def table(header, rows, align=None):
    """Markdown table lines; `align` per column, e.g. "---:"."""
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def write_result(out, name, payload, lines, indent=1):
    """Writes `out/NAME.json` (the payload) and `out/NAME.md` (the lines);
    returns the Markdown text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines).rstrip("\n") + "\n"
    (out / f"{name}.json").write_text(json.dumps(payload, indent=indent) + "\n")
    (out / f"{name}.md").write_text(text)
    return text
