"""Training runs shared by the tests, in-process or as a subprocess script.

As a script it can first split the CPU into logical devices (which must
happen before TensorFlow initialises), e.g.

    python tests/support.py --devices 2 --strategy mirrored --out run.json
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def require(name):
    """Fails the test, saying what to install, without package `name`.

    Never a skip: `pip install ".[test]"` installs every package the tests
    need, and a test that silently skips proves nothing.
    """
    import importlib.util

    import pytest

    if importlib.util.find_spec(name) is None:
        pytest.fail(
            f"`{name}` is not installed: install the test extra, "
            '`pip install ".[test]"`'
        )


def digits(n=1024):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:n] / 16.0).astype("float32"), y[:n].astype("int32")


def compiled(fn):
    """`fn` compiled as the backend's train step would be: a `tf.function`
    on TensorFlow; on JAX and PyTorch, whose optimizers update variables
    eagerly outside `fit`, `fn` itself."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn)


def value(model, variable):
    """A variable's value as NumPy, also during `fit` on JAX (whose `fit`
    carries the state and writes it back to the variables only at epoch
    ends, or when synced)."""
    from keras_autolr.keras import compat

    compat.sync_variables(model)
    return compat.to_numpy(variable)


def digits_mlp(hidden=(64,), optimizer=None, seed=0, **compile_kwargs):
    """A compiled MLP for `digits()`: 64 inputs, ReLU layers of the sizes in
    `hidden`, 10 logits; Adam unless `optimizer` is given. Seeds Keras with
    `seed` first, so equal calls give equal initial weights."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(units, activation="relu") for units in hidden]
        + [keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    return model


def train(
    steps_per_execution=1,
    jit_compile=False,
    strategy=None,
    epochs=12,
    budget_epochs=None,
    batch_size=64,
    bin_steps=8,
    seed=0,
):
    """Trains an MLP on digits with Adam + AutoLR; returns a result dict."""

    from keras_autolr import AutoLR
    from keras_autolr.keras.compat import read_values
    from keras_autolr.keras.weights import snapshot_variables

    x, y = digits()
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        model = digits_mlp(
            seed=seed,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
        )
    lrs = make_lr_probe()
    autolr = AutoLR(epochs=budget_epochs, verbose=0, bin_steps=bin_steps)
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[autolr, lrs],
    )
    ctl = autolr.controller
    variables = snapshot_variables(model)
    read = read_values(variables)
    return {
        # The batched read of the weight copies sees every replica's
        # variables as a variable-by-variable read does.
        "reader_matches": all(
            np.array_equal(a, v.numpy())
            for a, v in zip(read, variables, strict=True)
        ),
        "events": ctl.events,
        "lr": ctl.lr_at(np.arange(ctl.total_steps + 1)).tolist(),
        "weights": np.concatenate(
            [w.ravel() for w in model.get_weights()]
        ).tolist(),
        "replica_lrs": lrs.replica_lrs,
        "total_steps": ctl.total_steps,
    }


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def make_lr_probe():
    """A callback recording the LR each replica computes in-graph."""
    import keras

    class LRProbe(keras.callbacks.Callback):
        """The LR each replica computes in-graph, read at every epoch end."""

        def __init__(self):
            super().__init__()
            self.replica_lrs = []

        def on_train_begin(self, logs=None):
            import tensorflow as tf

            optimizer = self.model.optimizer
            self._inner = getattr(optimizer, "inner_optimizer", optimizer)
            self._lr = tf.function(lambda: self._inner.learning_rate)

        def on_epoch_end(self, epoch, logs=None):
            strategy = self.model.distribute_strategy
            step = self._inner.iterations
            per_replica = strategy.run(self._lr)
            values = strategy.experimental_local_results(per_replica)
            self.replica_lrs.append(
                [int(step.numpy()), [float(v) for v in values]]
            )

    return LRProbe()


def replica_step_losses(strategy, steps=5, capacity=4, batch=8):
    """Per-step losses recorded by a `StepLossTracker` under `strategy`:
    at step `i` replica `r` reports loss `(i + 1) * (r + 1)` for its `batch`
    samples. Returns the mean loss of the last `capacity` steps as read on
    the host (the ring holds the last `capacity` steps)."""
    import tensorflow as tf

    from keras_autolr.keras import compat
    from keras_autolr.keras.loss_capture import StepLossTracker

    with strategy.scope():
        tracker = StepLossTracker(capacity)

    @tf.function
    def update(step):
        def replica_fn():
            replica = (
                tf.distribute.get_replica_context().replica_id_in_sync_group
            )
            loss = tf.cast((step + 1) * (replica + 1), "float32")
            tracker.update_state(loss, sample_weight=batch)

        strategy.run(replica_fn)

    for step in range(steps):
        update(tf.constant(step))
    sums, counts = compat.to_numpy(tracker.steps).T
    slots = np.arange(steps - capacity, steps) % capacity
    return {
        "means": (sums[slots] / counts[slots]).tolist(),
        "counts": counts[slots].tolist(),
        "result": float(tracker.result()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", choices=("none", "mirrored"))
    parser.add_argument(
        "--step-losses",
        action="store_true",
        help="record per-step losses (`replica_step_losses`), no training",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices
    )
    strategy = None
    if args.strategy == "mirrored":
        devices = [f"/cpu:{i}" for i in range(args.devices)]
        strategy = tf.distribute.MirroredStrategy(devices)
    if args.step_losses:
        result = replica_step_losses(strategy or tf.distribute.get_strategy())
    else:
        result = train(strategy=strategy)
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def detector_of(ctl):
    """A `MinimumDetector` equal to the one `ctl` tests with (the controller
    keeps its own private): built, as the controller builds it, from its
    public settings."""
    from keras_autolr.core.smoothers import make_detector

    s = ctl.settings
    return make_detector(
        s.smoother, num_tests=s.num_tests, confidence=s.confidence, seed=s.seed
    )
