"""Data-parallel training for real, in separate processes.

JAX `keras.distribution.DataParallel` on 4 virtual CPU devices and on 2
processes (2 devices each) that train together over Gloo, against one
device; both processes killed with SIGKILL and restarted; the multi-host
example; and TensorFlow's `MultiWorkerMirroredStrategy` with 2 workers.

Each run is a fresh process with its own backend (`KERAS_BACKEND=jax` or
`tensorflow`, set here, whatever the backend of this pytest run), its own
virtual devices (`XLA_FLAGS=--xla_force_host_platform_device_count=N`, read
when JAX starts) and its own distributed runtime; it writes its results as
JSON (tests/jax_data_parallel_worker.py, tests/tf_multi_worker.py). A
process that fails makes the test fail with its log; one that hangs is
killed after `TIMEOUT` seconds, with the others of its job, and fails it.

What the JAX runs compare (see the worker's docstring for the model and
the probe that reads the LR applied at every step):

- Decisions: the events (switch step, reason, peak LR, rescues) and the LR
  trajectory of the controller. Data parallel sums the loss in another
  order, so floats are compared to 1e-6 relative; steps and reasons
  exactly. The two processes of one job get the very same losses (the
  reduced loss is replicated), so theirs are compared exactly.
- The LR applied on the device at every step equals `ctl.lr_at(step)`
  (the in-graph schedule runs in float32: to 1e-6 relative, or 1e-6 of
  the peak near the end of the decay, as in test_callback).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JAX_WORKER = os.path.join(HERE, "jax_data_parallel_worker.py")
TF_WORKER = os.path.join(HERE, "tf_multi_worker.py")
EXAMPLE = os.path.join(ROOT, "examples", "multi_host.py")
# Per job; each takes 10-30 s on 2 busy cores.
TIMEOUT = 300
# Float decisions (peak LRs, a rescue's loss) across device counts.
RTOL = 1e-6

pytestmark = pytest.mark.multi_process


# ----------------------------------------------------------------------
# Processes.


class WorkerFailed(AssertionError):
    """A process of a job exited non-zero; `logs` holds every log whole
    (the message, their ends)."""

    def __init__(self, message, logs):
        super().__init__(f"{message}\n{logs[-8000:]}")
        self.logs = logs


class Job:
    """Processes started together, each leading its own process group (so that a
    launcher's children die with it), with their output in log files."""

    def __init__(self, commands, env, logdir):
        os.makedirs(logdir, exist_ok=True)
        self.logs = [
            os.path.join(logdir, f"log-{i}.txt") for i in range(len(commands))
        ]
        self.processes = []
        for command, log in zip(commands, self.logs, strict=True):
            with open(log, "w") as f:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        cwd=logdir,
                        start_new_session=True,
                    )
                )

    def text(self, tail=4000):
        """The logs, each cut to its last `tail` characters (`None`: all)."""
        parts = []
        for i, log in enumerate(self.logs):
            with open(log) as f:
                text = f.read()
            parts.append(f"--- process {i}\n{text[-tail if tail else 0 :]}")
        return "\n".join(parts)

    def kill(self):
        """SIGKILLs every process (and its children) still running."""
        for p in self.processes:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.processes:
            p.wait()

    def wait(self, until=None, timeout=TIMEOUT):
        """Waits until every process exits 0, or until `until()` is true.

        Raises `WorkerFailed` (after killing the others, which would wait
        for it forever in a collective) if one exits non-zero, and fails
        the test (after killing all) if they are not done by `timeout`.
        """
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in self.processes]
            if any(c not in (None, 0) for c in codes):
                self.kill()
                codes = [p.returncode for p in self.processes]
                raise WorkerFailed(f"exit codes {codes}", self.text(None))
            if all(c == 0 for c in codes) or (until and until()):
                return codes
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(
                    f"hung: killed after {timeout} s\n{self.text()[-8000:]}"
                )
            time.sleep(0.2)


def free_ports(n):
    """`n` distinct free TCP ports on localhost."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def jax_env(devices):
    return dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_ENABLE_X64="1",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        TF_CPP_MIN_LOG_LEVEL="2",
    )


def start_jax(
    out, processes=1, devices=1, backup=None, stop_at=None, step_losses=False
):
    """Starts a JAX job: `processes` processes of `devices` devices each."""
    common = ["--step-losses"] if step_losses else []
    if backup is not None:
        common += ["--backup", str(backup)]
    if stop_at is not None:
        common += ["--stop-at", str(stop_at)]
    if processes == 1:
        commands = [[sys.executable, JAX_WORKER, str(out), *common]]
    else:
        (port,) = free_ports(1)
        commands = [
            [sys.executable, JAX_WORKER, str(out), *common]
            + [f"--coordinator=localhost:{port}"]
            + [f"--num-processes={processes}", f"--process-id={i}"]
            for i in range(processes)
        ]
    return Job(commands, jax_env(devices), os.path.join(out, "logs"))


def jax_results(out, processes=1):
    """Each process's result, with `applied`: its log of applied LRs (a
    step run twice, before a kill and after the restart, keeps the later
    value)."""
    results = []
    for i in range(processes):
        with open(os.path.join(out, f"result-{i}.json")) as f:
            result = json.load(f)
        applied = {}
        with open(os.path.join(out, f"lr-{i}.log")) as f:
            for line in f:
                step, lr = line.split()
                applied[int(step)] = float(lr)
        assert sorted(applied) == list(range(result["total_steps"]))
        result["applied"] = [applied[s] for s in sorted(applied)]
        results.append(result)
    return results


def run_jax(out, processes=1, devices=1, **kwargs):
    start_jax(out, processes, devices, **kwargs).wait()
    return jax_results(out, processes)


# ----------------------------------------------------------------------
# Checks.


def assert_applied_lr_is_the_controllers(run):
    """The LR the optimizer applied at every step (read off the probe) is
    the controller's, `ctl.lr_at(step)`."""
    # The device computes the decay in float32: 1e-6 of the peak near its
    # end, as in test_callback.
    peak = max(e["peak_lr"] for e in run["events"])
    np.testing.assert_allclose(
        run["applied"], run["lr"], rtol=RTOL, atol=RTOL * peak
    )


def assert_same_decisions(run, reference):
    """Same events (steps, kinds and reasons exactly; LRs and losses to
    `RTOL`) and the same LR trajectory."""
    assert [(e["event"], e["step"], e["reason"]) for e in run["events"]] == [
        (e["event"], e["step"], e["reason"]) for e in reference["events"]
    ]
    for event, expected in zip(run["events"], reference["events"], strict=True):
        assert event.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, float):
                assert event[key] == pytest.approx(value, rel=RTOL), key
            else:
                assert event[key] == value, key
    np.testing.assert_allclose(run["lr"], reference["lr"], rtol=RTOL, atol=0)


def assert_data_parallel(run, processes, devices):
    """The run used `processes` x `devices` devices, one data-parallel mesh
    over all of them, every variable replicated on each."""
    total = processes * devices
    assert run["process_count"] == processes
    assert run["local_device_count"] == devices
    assert run["device_count"] == total
    assert run["mesh_size"] == total
    assert run["variable_devices"] == [total]
    assert run["variables_replicated"]
    assert run["data_sharding"] == "('batch', None)"
    # Each process feeds its own share of every global batch of 64.
    assert run["local_batch"] == 64 // processes


# ----------------------------------------------------------------------
# JAX `keras.distribution`.


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The reference: one process, one device."""
    (run,) = run_jax(tmp_path_factory.mktemp("one_device"))
    assert_data_parallel(run, processes=1, devices=1)
    # The decisions under test: warmup ends before the cap (the loss back
    # at its starting level, the peak from the GP's smoothed minimum), and
    # a blow-up in decay restarts it, rolling the weights back.
    assert [e["event"] for e in run["events"]] == ["switch", "rescue"]
    assert run["events"][0]["reason"] != "cap"
    return run


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two processes of 2 devices training together, each with its own
    AutoLR `backup_dir` and `BackupAndRestore` directory (uninterrupted:
    the reference of the restart test too)."""
    out = tmp_path_factory.mktemp("two_processes")
    return run_jax(out, processes=2, devices=2, backup=out / "backup")


def test_data_parallel_on_4_devices_decides_as_on_1(tmp_path, one_device):
    (four,) = run_jax(tmp_path, devices=4)
    assert_data_parallel(four, processes=1, devices=4)
    assert_same_decisions(four, one_device)
    assert four["events"][0]["peak_lr"] == pytest.approx(
        one_device["events"][0]["peak_lr"], rel=RTOL
    )
    assert_applied_lr_is_the_controllers(four)
    assert_applied_lr_is_the_controllers(one_device)


@pytest.mark.parametrize("processes, devices", [(1, 4), (2, 2)])
def test_every_steps_loss_is_recorded_in_chunks_across_devices(
    tmp_path, processes, devices
):
    """`steps_per_execution=4` under `DataParallel`: AutoLR records the
    global loss of every step, in every process."""
    start_jax(tmp_path, processes, devices, step_losses=True).wait()
    for i in range(processes):
        with open(os.path.join(tmp_path, f"result-{i}.json")) as f:
            run = json.load(f)
        np.testing.assert_array_equal(
            run["means"], np.tile(np.arange(1.0, 13.0), 2)
        )
        np.testing.assert_array_equal(run["counts"], 1.0)


def test_two_processes_train_together_and_decide_identically(
    two_processes, one_device
):
    first, second = two_processes
    assert (first["process_index"], second["process_index"]) == (0, 1)
    for run in two_processes:
        assert_data_parallel(run, processes=2, devices=2)
        assert_applied_lr_is_the_controllers(run)
        assert run["epochs_run"] == 12
    # One job: the very same losses, so the very same decisions, bit for
    # bit, and the same weights (replicated, read back by each).
    assert first["events"] == second["events"]
    assert first["state"] == second["state"]
    assert first["lr"] == second["lr"]
    assert first["applied"] == second["applied"]
    assert first["weights"] == second["weights"]
    # And the decisions of one device.
    assert_same_decisions(first, one_device)


@pytest.mark.slow
def test_both_processes_killed_and_restarted_continue_the_same_schedule(
    tmp_path, two_processes
):
    """SIGKILL both processes mid-epoch, after the switch and the rescue;
    rerun the same commands: they resume from the last epoch end (before
    the switch: the restarted job makes the switch and the rescue again,
    rolling back to the weight copy AutoLR saved to disk) and end with the
    uninterrupted job's decisions, per-step LRs and weights."""
    expected = two_processes[0]
    spe = expected["steps_per_epoch"]
    switch, rescue = (e["step"] for e in expected["events"])
    # The next-to-last step of the switch's epoch.
    stop_at = (switch // spe + 1) * spe - 1
    assert switch < rescue < stop_at and stop_at % spe
    backup = tmp_path / "backup"

    job = start_jax(
        tmp_path, processes=2, devices=2, backup=backup, stop_at=stop_at
    )
    stopped = [tmp_path / f"stopped-{i}" for i in range(2)]
    job.wait(until=lambda: all(p.exists() for p in stopped))
    job.kill()  # Both at once, as a preempted pool of VMs.
    assert [p.returncode for p in job.processes] == [-signal.SIGKILL] * 2
    assert not list(tmp_path.glob("result-*.json"))
    for i in range(2):  # Each process's own backup, at the last epoch end.
        mine = backup / f"process-{i}"
        assert (mine / "model").is_dir()
        saved = sorted(p.name for p in (mine / "autolr").glob("*.json"))
        assert saved[-1] == f"autolr-epoch-{stop_at // spe:06d}.json"

    resumed = run_jax(
        tmp_path, processes=2, devices=2, backup=backup, stop_at=stop_at
    )
    for run, reference in zip(resumed, two_processes, strict=True):
        assert run["epochs_run"] == 12 - stop_at // spe
        assert run["events"] == reference["events"]
        assert run["state"] == reference["state"]
        assert run["applied"] == reference["applied"]
        assert run["weights"] == reference["weights"]


def test_multi_host_example_runs_on_two_local_processes(tmp_path):
    """`examples/multi_host.py --engine jax --launch-local 2`: two
    processes of 2 devices train together and report the same switch."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, EXAMPLE, "--engine", "jax"]
    command += ["--launch-local", "2", "--quick"]
    command += ["--backup-dir", str(tmp_path / "backup")]
    job = Job([command], env, str(tmp_path))
    job.wait()
    out = job.text()
    assert "exit codes: [0, 0]" in out
    lines = {
        i: [
            line.split("] ", 1)[1]
            for line in out.splitlines()
            if line.startswith(f"[process {i}] ")
            and "AutoLR ended warmup" in line
        ]
        for i in range(2)
    }
    assert len(lines[0]) == len(lines[1]) == 1, out
    (first,), (second,) = lines[0], lines[1]
    assert first.startswith("process 0/2, 4 replicas: AutoLR ended warmup")
    assert second == first.replace("process 0/2", "process 1/2")
    # Both evaluated the same replicated model.
    accuracy = [
        line.split("] ", 1)[1]
        for line in out.splitlines()
        if "] Test accuracy: " in line
    ]
    assert len(accuracy) == 2 and accuracy[0] == accuracy[1], out
    for i in range(2):
        assert (tmp_path / "backup" / f"process-{i}" / "autolr").is_dir()


# ----------------------------------------------------------------------
# TensorFlow MultiWorkerMirroredStrategy.

UPSTREAM_TF_ERROR = (
    "with an unsupported type "
    "(<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor"
)


class UpstreamMultiWorkerFailure(Exception):
    """Keras's `fit` failed under MultiWorkerMirroredStrategy the known way."""


def tf_env():
    return dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
    )


def run_tf_workers(out, n):
    os.makedirs(out, exist_ok=True)
    workers = ",".join(f"localhost:{p}" for p in free_ports(n))
    commands = [
        [sys.executable, TF_WORKER, str(out), f"--workers={workers}"]
        + [f"--index={i}"]
        for i in range(n)
    ]
    try:
        Job(commands, tf_env(), os.path.join(out, "logs")).wait(timeout=120)
    except WorkerFailed as failure:
        if UPSTREAM_TF_ERROR in failure.logs:
            raise UpstreamMultiWorkerFailure(str(failure)) from None
        raise
    results = []
    for i in range(n):
        with open(os.path.join(out, f"result-{i}.json")) as f:
            results.append(json.load(f))
    return results


@pytest.mark.xfail(
    strict=True,
    raises=UpstreamMultiWorkerFailure,
    reason=(
        "keras-team/keras#20585: Keras 3 fit fails under "
        "MultiWorkerMirroredStrategy before the first step (Keras 3.15, "
        "TF 2.21): TensorFlowTrainer._maybe_symbolic_build calls "
        "strategy.reduce('MEAN', <(x, y) of PerReplica>, axis=None), which "
        "raises ValueError: Attempt to convert a value (PerReplica:{...}) "
        "with an unsupported type (<class "
        "'tensorflow.python.distribute.values.PerReplica'>) to a Tensor"
    ),
)
def test_tf_multi_worker_mirrored_strategy(tmp_path):
    """Two workers via TF_CONFIG train together and make the same
    decisions, those of one worker. Any failure other than the known
    upstream one (or a hang) fails the test; a pass fails it too (strict
    xfail), to say that upstream fixed it and this test now stands."""
    first, second = run_tf_workers(tmp_path / "two", 2)
    assert first["num_replicas"] == second["num_replicas"] == 2
    assert first["events"] == second["events"]
    assert first["weights"] == second["weights"]
    (single,) = run_tf_workers(tmp_path / "one", 1)
    assert single["num_replicas"] == 1
    assert len(single["events"]) >= 1
    assert_same_decisions(first, single)
