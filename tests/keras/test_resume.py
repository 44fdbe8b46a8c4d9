"""Preemption: kill -9 mid-warmup or mid-decay, rerun, same schedule."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import support

from keras_autolr import AutoLR

# tests/, where the helper scripts are.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = os.path.join(TESTS, "resumable.py")


def run_job(workdir, kill_at=None, crash_in=None):
    cmd = [sys.executable, JOB, str(workdir)]
    if kill_at is not None:
        cmd += ["--kill-at", str(kill_at)]
    if crash_in is not None:
        cmd += ["--crash-in", crash_in]
    return subprocess.run(cmd, timeout=600).returncode


def lr_by_step(workdir):
    """The LR of every step; a re-run step keeps its latest value."""
    lrs = {}
    with open(os.path.join(workdir, "lr.log")) as f:
        for line in f:
            step, lr = line.split()
            lrs[int(step)] = float(lr)
    return [lrs[s] for s in sorted(lrs)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    assert run_job(workdir) == 0
    result = json.loads((workdir / "result.json").read_text())
    return result, lr_by_step(workdir)


@pytest.mark.parametrize("phase", ["warmup", "decay"])
def test_sigkill_and_rerun_continue_the_same_schedule(
    tmp_path, uninterrupted, phase
):
    expected, expected_lrs = uninterrupted
    event = expected["events"][0]
    assert event["event"] == "switch"
    switch = event["step"]
    # Mid-epoch (16 steps per epoch), before or after the switch.
    kill_at = switch // 2 + 5 if phase == "warmup" else switch + 21
    assert (kill_at < switch) == (phase == "warmup")
    assert run_job(tmp_path, kill_at=kill_at) == -signal.SIGKILL
    assert not (tmp_path / "result.json").exists()
    assert run_job(tmp_path, kill_at=kill_at) == 0
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert resumed == expected
    np.testing.assert_array_equal(lr_by_step(tmp_path), expected_lrs)


@pytest.mark.parametrize("point", ["state", "copy", "between"])
def test_a_kill_inside_a_save_resumes_the_same_schedule(
    tmp_path, uninterrupted, point
):
    """Killed after a temporary file is written and before its rename (of
    the state, or of the weight copy), or between a copy and the state
    that names it: the rerun resumes from the last intact state."""
    expected, expected_lrs = uninterrupted
    assert run_job(tmp_path, crash_in=point) == -signal.SIGKILL
    files = os.listdir(tmp_path / "autolr")
    temporary = [n for n in files if n.endswith(".tmp")]
    assert len(temporary) == (0 if point == "between" else 1)
    if point == "between":  # The copy is there, named by no state yet.
        assert any(n.startswith("autolr-weights-") for n in files)
    assert run_job(tmp_path, crash_in=point) == 0
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path / "autolr"))
    resumed = json.loads((tmp_path / "result.json").read_text())
    assert resumed == expected
    np.testing.assert_array_equal(lr_by_step(tmp_path), expected_lrs)


# Digits at this budget blows up right after the switch: a decay restart
# (with its warnings) is part of the schedule that must resume identically.
@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
def test_checkpoint_and_initial_epoch_resume(tmp_path):
    """The ModelCheckpoint + fit(initial_epoch=...) path."""
    x, y = support.digits()

    fit = dict(x=x, y=y, batch_size=64, shuffle=False, verbose=0)
    whole = AutoLR(epochs=10, verbose=0)
    whole_model = support.digits_mlp(hidden=(32,))
    whole_model.fit(epochs=10, callbacks=[whole], **fit)

    ckpt = str(tmp_path / "model.keras")
    first = AutoLR(epochs=10, verbose=0, backup_dir=tmp_path / "autolr")
    model = support.digits_mlp(hidden=(32,))
    model.fit(
        epochs=6,
        callbacks=[first, keras.callbacks.ModelCheckpoint(ckpt)],
        **fit,
    )
    # A new process would do exactly this: load, new callback, resume.
    resumed = keras.models.load_model(ckpt)
    second = AutoLR(epochs=10, verbose=0, backup_dir=tmp_path / "autolr")
    resumed.fit(initial_epoch=6, epochs=10, callbacks=[second], **fit)
    assert second.controller.get_state() == whole.controller.get_state()
    assert second.controller.events == whole.controller.events
    for a, b in zip(
        resumed.get_weights(), whole_model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_resuming_without_a_saved_state_says_what_to_do(tmp_path):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="mse")
    x = np.zeros((64, 64), "float32")
    y = np.zeros((64, 10), "float32")
    autolr = AutoLR(verbose=0, backup_dir=tmp_path)
    with pytest.raises(ValueError, match="backup_dir") as info:
        model.fit(
            x,
            y,
            batch_size=16,
            initial_epoch=3,
            epochs=5,
            verbose=0,
            callbacks=[autolr],
        )
    assert "no state saved after epoch 3" in str(info.value)
