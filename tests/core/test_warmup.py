import multiprocessing
import threading

import pytest

from keras_autolr import background


def where_and_what(x):
    return threading.current_thread().name, x * 2


def test_a_job_runs_on_the_worker_thread_or_inline():
    name, value = background.submit(where_and_what, 21).result()
    assert name.startswith("autolr-test") and value == 42
    name, value = background.submit(
        where_and_what, 21, background=False
    ).result()
    assert name == threading.current_thread().name and value == 42
    assert background.completed(7).result() == 7


def fail():
    raise ArithmeticError("in the job")


@pytest.mark.parametrize("threaded", [True, False])
def test_an_error_in_a_job_reaches_the_caller(threaded):
    if threaded:
        job = background.submit(fail)
        with pytest.raises(ArithmeticError, match="in the job"):
            job.result()
    else:
        with pytest.raises(ArithmeticError, match="in the job"):
            background.submit(fail, background=False)


def run_in_child(queue):
    queue.put(background.submit(where_and_what, 5).result(timeout=20))


def test_a_forked_child_gets_its_own_worker():
    """A forked child inherits the parent's executor but not its thread:
    without a new worker, its first job would never run."""
    background.submit(where_and_what, 1).result()  # The parent's worker.
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=run_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    name, value = queue.get(timeout=5)
    assert name.startswith("autolr-test") and value == 10
