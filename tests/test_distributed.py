"""The in-graph LR under chunked execution, strategies, XLA, mixed precision.

Keras 3.15 `fit` under `MirroredStrategy` with `steps_per_execution > 1`
fails on logical CPU devices even without AutoLR (see the README), so the
chunked path is tested on one device and the strategy path with 1.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import support

from keras_autolr import AutoLR
from keras_autolr.core.controller import AutoLRController

# Short budgets at steps_per_execution=8: the schedule, not the detection,
# is under test here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:AutoLR tests the loss minimum where:RuntimeWarning"
)

HERE = os.path.dirname(os.path.abspath(__file__))


def test_steps_per_execution_1_and_8_give_the_same_schedule():
    one = support.train(steps_per_execution=1)
    eight = support.train(steps_per_execution=8)
    assert one["events"] == eight["events"]
    assert len(one["events"]) == 1  # A switch happened, at the same step.
    np.testing.assert_array_equal(one["lr"], eight["lr"])
    np.testing.assert_allclose(one["weights"], eight["weights"], atol=1e-5)
    # The in-graph LR followed the schedule inside every 8-step chunk: the
    # replica LRs read at epoch ends equal the controller's.
    for step, (lr,) in eight["replica_lrs"]:
        assert lr == pytest.approx(eight["lr"][step], rel=1e-6, abs=1e-12)


def test_jit_compile_gives_the_same_schedule():
    eager = support.train()
    xla = support.train(jit_compile=True)
    assert xla["events"] == eager["events"]
    np.testing.assert_array_equal(xla["lr"], eager["lr"])
    # Past the switch the LR is high enough for training to be chaotic, so
    # compare weights over the first third of the budget.
    eager = support.train(epochs=4, budget_epochs=12)
    xla = support.train(epochs=4, budget_epochs=12, jit_compile=True)
    np.testing.assert_allclose(xla["weights"], eager["weights"], atol=1e-4)


@pytest.mark.parametrize("devices", [2, 4])
def test_mirrored_strategy_matches_a_single_device(tmp_path, devices):
    runs = {}
    for name, args in [
        ("single", ["--devices", "1"]),
        ("mirrored", ["--devices", str(devices), "--strategy", "mirrored"]),
    ]:
        out = tmp_path / f"{name}.json"
        subprocess.run(
            [sys.executable, os.path.join(HERE, "support.py"), *args]
            + ["--out", str(out)],
            check=True,
            timeout=600,
        )
        runs[name] = json.loads(out.read_text())
    single, mirrored = runs["single"], runs["mirrored"]
    assert mirrored["events"] == single["events"]
    assert mirrored["reader_matches"] and single["reader_matches"]
    np.testing.assert_allclose(mirrored["lr"], single["lr"], rtol=1e-12)
    # Weights are not compared: the reduction order across replicas differs
    # in the last bits, and training near the peak LR amplifies that.
    # Every replica computes the same LR, and it is the controller's.
    assert len(mirrored["replica_lrs"]) == 12
    for step, lrs in mirrored["replica_lrs"]:
        assert len(lrs) == devices
        assert len(set(lrs)) == 1
        assert lrs[0] == pytest.approx(single["lr"][step], rel=1e-6)


# The sawtooth loss (the batch's target) looks like a blow-up in decay.
@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    """The LR reaches the inner optimizer; the detector sees the true loss."""
    steps, batch = 16, 8
    y = np.repeat(np.arange(1, steps + 1, dtype="float32"), batch)[:, None]
    x = np.ones_like(y)
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        # The loss is exactly the batch's target value (times one): a scaled
        # loss would show up as values 2**15 times too large.
        model.compile(
            optimizer=keras.optimizers.SGD(),
            loss=lambda t, p: (
                keras.ops.mean(t)
                + 0.0 * keras.ops.cast(keras.ops.mean(p), "float32")
            ),
        )
        probe = StepLRs()
        autolr = AutoLR(verbose=0, min_lr=1e-3)
        model.fit(
            x,
            y,
            batch_size=batch,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[autolr, probe],
        )
    finally:
        keras.config.set_dtype_policy("float32")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    ctl = autolr.controller
    _, means, _ = ctl.loss_bins()
    np.testing.assert_allclose(
        means, np.tile(np.arange(1, steps + 1), 3), rtol=1e-6
    )
    # The device evaluates the schedule in float32: 1e-6 of the peak.
    np.testing.assert_allclose(
        probe.lrs,
        ctl.lr_at(np.arange(len(probe.lrs))),
        rtol=1e-6,
        atol=1e-6 * ctl.landing_lr,
    )


@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")  # Sawtooth.
def test_steps_skipped_by_the_loss_scale_optimizer_keep_the_schedule():
    """A step with non-finite scaled gradients is skipped (no update, no
    `iterations` increment) but is still a batch of the budget: the LR of
    every batch is the controller's for that batch."""
    steps, batch, epochs = 16, 8, 3
    y = np.repeat(np.arange(1, steps + 1, dtype="float32"), batch)[:, None]
    x = np.ones_like(y)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

        def loss(t, p):
            # Worth exactly the target; on batch 5 (target 5) a gradient
            # of 1e3 per sample, which the loss scale of 2**15 overflows
            # in float16 at every epoch.
            p = keras.ops.cast(p, "float32")
            push = keras.ops.where(keras.ops.equal(t, 5.0), 1e3, 0.0)
            zero = p - keras.ops.stop_gradient(p)
            return keras.ops.mean(t) + keras.ops.mean(push * zero)

        model.compile(optimizer=keras.optimizers.SGD(), loss=loss)
        probe = StepLRs()
        autolr = AutoLR(verbose=0, min_lr=1e-3)
        model.fit(
            x,
            y,
            batch_size=batch,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[autolr, probe],
        )
    finally:
        keras.config.set_dtype_policy("float32")
    ctl = autolr.controller
    # The skips happened: one per epoch.
    assert int(model.optimizer.iterations.numpy()) == steps * epochs - epochs
    assert ctl.steps == steps * epochs
    np.testing.assert_allclose(
        probe.lrs,
        ctl.lr_at(np.arange(steps * epochs)),
        rtol=1e-6,
        atol=1e-6 * ctl.landing_lr,
    )


class StepLRs(keras.callbacks.Callback):
    """The LR the (inner) optimizer will use, read before every step."""

    def __init__(self):
        super().__init__()
        self.lrs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(float(self.model.optimizer.learning_rate))


DECIDE = """
import hashlib, json, sys
import numpy as np
from keras_autolr.core.controller import AutoLRController
losses = json.load(open(sys.argv[1]))
ctl = AutoLRController(total_steps=len(losses), seed=7)
lrs = [ctl.step(loss) for loss in losses]
digest = hashlib.sha256(np.asarray(lrs, dtype=np.float64).tobytes())
print(json.dumps({"events": ctl.events, "lrs": digest.hexdigest()}))
"""


def test_two_processes_fed_the_same_losses_decide_identically(tmp_path):
    rng = np.random.default_rng(0)
    ctl = AutoLRController(total_steps=600)
    losses = []
    lr = ctl.lr
    for _ in range(600):  # Record a realistic loss stream once.
        level = 1 + 0.3 * np.log10(lr / 3e-3) ** 2
        if ctl.phase == "decay":
            level = 1.0  # Training keeps its progress.
        losses.append(level + 0.05 * rng.normal())
        lr = ctl.step(losses[-1])
    path = tmp_path / "losses.json"
    path.write_text(json.dumps(losses))
    outputs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        result = subprocess.run(
            [sys.executable, "-c", DECIDE, str(path)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0]["events"][0]["reason"] == "minimum"
