"""benchmarks/resumable_runs.py: the progress file and the runner of the
suite."""

import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import pytest

# The repository root, as `python -m benchmarks.suite` has it on the path;
# worker processes inherit it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import resumable_runs  # noqa: E402


def make_runner(progress, workers, rerun=()):
    # Stand-ins from the standard library, which worker processes can
    # import: a job is the record as JSON, and the work parses it.
    return resumable_runs.Runner(
        progress,
        fingerprint_of=lambda record: "fp1",
        code="c1",
        key=lambda spec: spec["key"],
        work=json.loads,
        job=json.dumps,
        init=os.getpid,
        init_args=(),
        describe=lambda record: record["key"],
        workers=workers,
        rerun=rerun,
    )


def keys(progress):
    return [
        r["key"] for r in resumable_runs.read_records(progress, lambda r: "fp1")
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_what_is_not_recorded_once_and_resumes(tmp_path, workers):
    progress = tmp_path / "runs.progress.jsonl"
    progress.write_text(
        '{"key": "a", "method": "m", "fingerprint": "fp1", "code": "c0"}\n'
        '{"key": "b", "meth\n'  # Torn by an interruption: skipped.
        '{"key": "b", "method": "m", "fingerprint": "other"}\n'
    )
    specs = [{"key": k, "method": "m"} for k in "abc"]
    runner = make_runner(progress, workers)
    assert list(runner.done) == ["a"]  # The other settings' "b" is not.
    runner.run("all", specs)
    assert keys(progress)[0] == "a" and sorted(keys(progress)) == list("abc")
    records = resumable_runs.read_records(progress, lambda r: "fp1")
    assert [r["code"] for r in records] == ["c0", "c1", "c1"]
    assert set(runner.done) == set("abc")

    # The same plan again: nothing to do.
    make_runner(progress, workers).run("all", specs)
    assert len(keys(progress)) == 3
    # With the method to rerun: every run once more, then nothing.
    again = make_runner(progress, workers, rerun=["m"])
    again.run("all", specs)
    again.run("all", specs)
    assert sorted(keys(progress)) == sorted("abc" * 2)
    assert not again.stale


@pytest.mark.parametrize("where", ["at start", "in a run"])
def test_a_worker_that_dies_ends_the_run_with_a_clear_error(tmp_path, where):
    """A pool that replaced each dead worker would wait forever."""
    progress = tmp_path / "runs.progress.jsonl"
    runner = make_runner(progress, workers=2)
    if where == "at start":
        runner.init, runner.init_args = os._exit, (3,)
    else:
        runner.work = os._exit  # Its job, a JSON string, is not an int...
        runner.job = lambda spec: 3  # ...so the job is the exit status.
    outcome = {}
    # A child process of the caller's own: the runner leaves it alone.
    bystander = multiprocessing.get_context("spawn").Process(
        target=time.sleep, args=(60,)
    )
    bystander.start()

    def run():
        try:
            runner.run("all", [{"key": k, "method": "m"} for k in "ab"])
        except RuntimeError as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the runner still waits on dead workers"
    assert "worker process died" in str(outcome["error"])
    assert "--workers 1" in str(outcome["error"])
    assert keys(progress) == []
    bystander.join(timeout=2)  # Returns at once if it was terminated.
    assert bystander.is_alive()
    bystander.terminate()
    bystander.join()
    # No worker is left running (a terminated one may take a moment to go).
    deadline = time.monotonic() + 30
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert multiprocessing.active_children() == []
