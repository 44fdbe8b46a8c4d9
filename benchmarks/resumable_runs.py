"""Resumable benchmark runs: the progress file, and the runner that trains
the runs not yet recorded, here or in worker processes.

A run is a spec (a dict); a finished run is a record, appended at once to
a JSON-lines progress file by the parent process only: an interruption
loses at most the runs in flight, and the same command resumes. A record
counts only while its fingerprint (a hash of what changes a result) is the
one its benchmark computes for the current settings.
"""

import json
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

# A worker that dies (at start, or in a run) ends the benchmark with this
# rather than being replaced by another that dies the same way.
WORKER_DIED = (
    "A benchmark worker process died. If it died at start, a fresh Python "
    "process cannot import the benchmark (is a module shadowed on "
    "sys.path?) or its initializer failed; otherwise it ran out of memory "
    "or crashed. The runs recorded so far are kept: run the same command "
    "with --workers 1 to see the error."
)


def read_records(path, fingerprint_of):
    """The records of the progress file `path`, oldest first, whose
    fingerprint is `fingerprint_of(record)`; torn lines are skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # A line torn by an interruption.
            continue
        if record.get("fingerprint") == fingerprint_of(record):
            records.append(record)
    return records


def append_record(path, record):
    """Appends `record` to the progress file `path`, on disk at once."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


class Runner:
    """Trains the specs not yet recorded; appends each record at once.

    Args:
        progress: the progress file.
        fingerprint_of: a record's expected fingerprint (from its task).
        code: the code version stamped on every new record.
        key: a spec's key in the progress file.
        work: trains one job, `job(spec)`, and returns its record; a
            module-level function, so that worker processes can run it.
        job: the argument of `work` for a spec.
        init: prepares a process for `work` (threads, data), called with
            `init_args`; module-level too.
        describe: the line printed for a record.
        workers: processes; 1 trains in this process.
        rerun: methods to train again once, even where recorded.
    """

    def __init__(
        self,
        progress,
        fingerprint_of,
        code,
        key,
        work,
        job,
        init,
        init_args,
        describe,
        workers=1,
        rerun=(),
    ):
        self.progress = progress
        self.fingerprint_of = fingerprint_of
        self.code = code
        self.key, self.work, self.job = key, work, job
        self.init, self.init_args = init, init_args
        self.describe = describe
        self.workers = workers
        records = read_records(progress, fingerprint_of)
        self.done = {record["key"]: record for record in records}
        # Runs to redo once in this invocation, even where recorded.
        self.stale = {
            key
            for key, record in self.done.items()
            if record["method"] in (rerun or ())
        }

    def run(self, name, specs):
        """Trains the specs of `specs` that are not done (or stale)."""
        todo = [
            s
            for s in specs
            if self.key(s) not in self.done or self.key(s) in self.stale
        ]
        print(f"{name}: {len(specs)} runs, {len(todo)} to do.", flush=True)
        if not todo:
            return
        jobs = [self.job(spec) for spec in todo]
        if self.workers == 1:
            self.init(*self.init_args)
            for i, job in enumerate(jobs, 1):
                self._record(self.work(job), i, len(todo))
            return
        context = multiprocessing.get_context("spawn")
        others = set(multiprocessing.active_children())
        pool = ProcessPoolExecutor(
            min(self.workers, len(todo)),
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.init, self.init_args),
        )
        try:
            futures = [pool.submit(self.work, job) for job in jobs]
            for i, future in enumerate(as_completed(futures), 1):
                self._record(future.result(), i, len(todo))
        except BrokenProcessPool as error:
            _stop(pool, others)
            raise RuntimeError(WORKER_DIED) from error
        except BaseException:
            # Ctrl-C, SIGTERM, an error: the workers stop at once; the
            # finished runs are already saved.
            _stop(pool, others)
            raise
        pool.shutdown()

    def _record(self, record, i, num):
        record.update(fingerprint=self.fingerprint_of(record), code=self.code)
        append_record(self.progress, record)
        self.done[record["key"]] = record
        self.stale.discard(record["key"])
        print(f"[{i}/{num}] {self.describe(record)}", flush=True)


def _stop(pool, others):
    """Cancels the runs not started and terminates the pool's workers: the
    child processes that are not among `others`, those that ran before."""
    pool.shutdown(wait=False, cancel_futures=True)
    for child in set(multiprocessing.active_children()) - others:
        child.terminate()


def _start_worker(init, init_args):
    """A worker process: Ctrl-C is the parent's to handle (it ends the
    pool); then `init`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init(*init_args)
