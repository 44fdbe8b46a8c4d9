"""warmup: the tests of warmup, their Verdicts, and the worker thread
that runs them."""

import json
import math
import multiprocessing
import threading

import numpy as np
import pytest

from keras_autolr.core import warmup
from keras_autolr.core.gp import MinimumDetector
from keras_autolr.core.losses import LossRecord
from keras_autolr.core.options import Settings
from keras_autolr.core.schedule import Decisions


def where_and_what(x):
    return threading.current_thread().name, x * 2


def test_a_job_runs_on_the_worker_thread_or_inline():
    name, value = warmup.submit(where_and_what, 21).result()
    assert name.startswith("autolr-test") and value == 42
    name, value = warmup.submit(where_and_what, 21, background=False).result()
    assert name == threading.current_thread().name and value == 42
    assert warmup.completed(7).result() == 7


def fail():
    raise ArithmeticError("in the job")


@pytest.mark.parametrize("threaded", [True, False])
def test_an_error_in_a_job_reaches_the_caller(threaded):
    if threaded:
        job = warmup.submit(fail)
        with pytest.raises(ArithmeticError, match="in the job"):
            job.result()
    else:
        with pytest.raises(ArithmeticError, match="in the job"):
            warmup.submit(fail, background=False)


def run_in_child(queue):
    queue.put(warmup.submit(where_and_what, 5).result(timeout=20))


def test_a_forked_child_gets_its_own_worker():
    """A forked child inherits the parent's executor but not its thread:
    without a new worker, its first job would never run."""
    warmup.submit(where_and_what, 1).result()  # The parent's worker.
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=run_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    name, value = queue.get(timeout=5)
    assert name.startswith("autolr-test") and value == 10


# ----------------------------------------------------------------------------
# WarmupTests: the tests of warmup answer with Verdicts.


def u_loss(lr, best=1e-2):
    return 1.0 + 0.3 * math.log10(lr / best) ** 2


def run_tests(act_at_once, cap=400, steps=None, seed=0):
    """Feeds a record the losses along the ramp and calls `at_test_point`
    after each step, as the controller does; returns the `WarmupTests`
    and the verdicts `(end, verdict)` up to the first that ends warmup
    (or `steps` steps)."""
    settings = Settings(1000, check_every=10, background=False)
    shape = settings.shape()
    tests = warmup.WarmupTests(
        MinimumDetector(),
        shape,
        cap=cap,
        check_every=10,
        patience=2,
        min_bins=8,
        background=False,
        act_at_once=act_at_once,
    )
    record = LossRecord(bin_steps=1, max_bins=1024)
    rng = np.random.default_rng(seed)
    verdicts = []
    for step in range(steps or cap):
        lr = float(shape.warmup_lr(step))
        record.add(u_loss(lr) + 0.01 * rng.normal(), 1)
        end = step + 1
        for verdict in tests.at_test_point(record, end, end % 10 == 0, True):
            verdicts.append((end, verdict))
        if verdicts and verdicts[-1][1].reason is not None:
            break
    return tests, verdicts


@pytest.mark.parametrize("act_at_once", [False, True])
def test_tests_answer_with_provisional_landings_then_an_end(act_at_once):
    tests, verdicts = run_tests(act_at_once)
    *provisional, (end, last) = verdicts
    assert last.reason in ("minimum", "overshoot")
    assert provisional and all(v.reason is None for _, v in provisional)
    # Each verdict is acted on at a test point; one test later unless it
    # is waited for.
    assert all(e % 10 == 0 and v.step == e for e, v in verdicts)
    assert last.step == end
    # Warmup lands at half (`landing`) the LR at the smoothed minimum.
    assert last.landing_lr == 0.5 * tests.minimum_lr
    assert 1e-2 / 2 < tests.minimum_lr < 1e-2 * 2
    assert tests.tests_run >= tests.detector_runs >= 2
    assert 0.0 <= tests.last_probability <= 1.0
    # The tests hold no schedule: only the controller changes it.
    assert not any(isinstance(v, Decisions) for v in vars(tests).values())


def test_a_test_acts_one_test_point_later_unless_waited_for():
    _, later = run_tests(act_at_once=False)
    _, at_once = run_tests(act_at_once=True)
    # The same answers, each acted on 10 steps later.
    assert [(e - 10, v.reason, v.landing_lr) for e, v in later] == [
        (e, v.reason, v.landing_lr) for e, v in at_once
    ]


def test_no_test_before_min_bins_and_none_for_unknown_losses():
    settings = Settings(1000, check_every=2, background=False)
    tests = warmup.WarmupTests(
        MinimumDetector(), settings.shape(), 400, 2, 2, 8, False
    )
    record = LossRecord(bin_steps=1, max_bins=1024)
    for step in range(6):
        record.add(2.0, 1)
        assert tests.at_test_point(record, step + 1, step % 2 == 1, True) == []
    assert tests.tests_run == 0  # 6 bins: fewer than 8.
    for _ in range(4):
        record.add(2.0, 1)
    tests.at_test_point(record, 10, True, known=False)
    assert tests.tests_run == 0  # Unknown losses start no test.
    tests.at_test_point(record, 10, True, known=True)
    assert tests.tests_run == 1


def test_the_state_of_a_test_in_flight_round_trips():
    # Stopped at step 150, a test point before the cap and the minimum:
    # its test waits for the next one.
    tests, verdicts = run_tests(act_at_once=False, steps=150)
    assert all(v.reason is None for _, v in verdicts)
    state = json.loads(json.dumps(tests.get_state()))
    assert state["pending"]["now"] == 150
    settings = Settings(1000, check_every=10, background=False)
    clone = warmup.WarmupTests(
        MinimumDetector(), settings.shape(), 400, 10, 2, 8, False
    )
    clone.set_state(state)
    assert clone.get_state() == state
    assert (clone.tests_run, clone.minimum_lr) == (
        tests.tests_run,
        tests.minimum_lr,
    )
