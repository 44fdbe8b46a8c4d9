"""One process of a JAX `keras.distribution.DataParallel` run with AutoLR.

    KERAS_BACKEND=jax JAX_ENABLE_X64=1 \
    XLA_FLAGS=--xla_force_host_platform_device_count=N \
    python tests/jax_data_parallel_worker.py OUT
        [--coordinator localhost:PORT --num-processes P --process-id I]
        [--backup DIR] [--stop-at STEP] [--step-losses]

Run as a subprocess by tests/test_jax_distribution.py (the backend, the
virtual devices and the distributed runtime must be set up before JAX
starts). It trains a small MLP on scikit-learn's digits, in float64, with
plain SGD and AutoLR, data parallel over every device of every process (N
virtual CPU devices each), and writes OUT/result-I.json at the end (`I` the
process index; 0 alone): the devices and shardings it ran on, the
controller's events, state and LR trajectory, and the final weights.

The LR the optimizer really applied is read at every step off a probe: a
scalar weight `w`, starting at 1, whose only loss term is `2**-10 * w`
(gradient exactly `2**-10`, whatever the batch and however the replicas
sum it), so SGD moves it by exactly `2**-10` times the LR of the step.
Each step's LR is appended to OUT/lr-I.log as it goes (`step lr`), so a
killed and restarted process leaves the LRs of both runs there.

With `--backup DIR`, process I trains with
`AutoLR(backup_dir=DIR/process-I/autolr)` and
`keras.callbacks.BackupAndRestore(DIR/process-I/model)`: a directory per
process, since AutoLR's state store (which prunes old files) and
BackupAndRestore each expect a single writer. With `--stop-at STEP`, the
process, after STEP steps the first time it gets there (a marker file in
OUT remembers), writes OUT/stopped-I and waits to be killed: the test
SIGKILLs every process of the job then, like a preempted pool of VMs, and
running the same commands again resumes from the last epoch end.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPOCHS = 12
GLOBAL_BATCH = 64
PROBE_WEIGHT = 2.0**-10  # A power of 2: the probe's gradient is exact.
# How long a process stopped by --stop-at waits to be killed before it
# gives up (exit 3): a test that forgot it cannot leave it behind forever.
WAIT_TO_BE_KILLED_S = 300
# Plain SGD on this MLP improves up to an LR near 1 and blows up soon after:
# a ramp towards 10 gets there within the first half of the budget. The
# warmup then ends on the loss back at its start ("explosion", the peak from
# the GP's smoothed minimum), and the loss blows up again in decay: the
# decay restarts and the weights roll back (a "rescue").
AUTOLR = {"max_lr": 10.0}


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--backup")
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument(
        "--step-losses",
        action="store_true",
        help="fit a model whose loss is known at every step, with "
        "steps_per_execution=4, and write what AutoLR recorded",
    )
    return parser.parse_args(argv)


def build_model(keras):
    """An MLP for the digits (64 -> 32 ReLU -> 10 logits) and the probe.

    Inputs `(x, ones)`, outputs `(logits, probe)` where `probe = w * ones`.
    """
    x = keras.Input((64,), name="x")
    ones = keras.Input((1,), name="ones")
    h = keras.layers.Dense(32, activation="relu")(x)
    logits = keras.layers.Dense(10, name="logits")(h)
    probe = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(1.0),
        name="probe",
    )(ones)
    model = keras.Model([x, ones], [logits, probe])
    model.compile(
        optimizer=keras.optimizers.SGD(),
        loss=[
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            lambda y, p: keras.ops.mean(p),
        ],
        loss_weights=[1.0, PROBE_WEIGHT],
    )
    return model


def step_losses(args, keras, pid):
    """The loss of step `i` of each epoch is exactly `i + 1` (the mean of
    the batch's targets); chunks of 4 steps. Writes the loss record of
    AutoLR to OUT/result-I.json."""
    import numpy as np
    import tensorflow as tf

    from keras_autolr import AutoLR

    steps, batch = 12, 8
    y = np.repeat(np.arange(1.0, steps + 1), batch)[:, None]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(
        optimizer="sgd",
        loss=lambda t, p: keras.ops.mean(t) + 0.0 * keras.ops.mean(p),
        steps_per_execution=4,
    )
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros_like(y), y))
    autolr = AutoLR(verbose=0)
    model.fit(
        dataset.batch(batch).repeat(),
        steps_per_epoch=steps,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[autolr],
    )
    _, means, counts = autolr.controller.loss_bins()
    result = {"means": means.tolist(), "counts": counts.tolist()}
    with open(os.path.join(args.out, f"result-{pid}.json"), "w") as f:
        json.dump(result, f)
    return 0


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    import jax
    import keras

    if keras.backend.backend() != "jax":
        sys.exit("run with KERAS_BACKEND=jax")
    if args.num_processes > 1:
        # Gloo is JAX's default CPU collectives implementation; set it
        # explicitly so the test fails loudly if that ever changes.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize(
            job_addresses=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    keras.config.set_floatx("float64")

    import numpy as np
    import tensorflow as tf

    from keras_autolr import AutoLR

    pid = jax.process_index()
    distribution = keras.distribution.DataParallel(
        devices=keras.distribution.list_devices()
    )
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    if args.step_losses:
        return step_losses(args, keras, pid)
    model = build_model(keras)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import support

    x, y = support.digits()
    x = x.astype("float64")
    ones = np.ones((len(x), 1))
    # Global batches: in a multi-process run, Keras gives each process its
    # own slice of every batch (`DataParallel.distribute_dataset`: rebatch
    # and shard, after which the number of batches is unknown, so fit gets
    # `steps_per_epoch`; an epoch is one pass, so a restarted run at epoch
    # k sees the batches of the uninterrupted run's epoch k).
    dataset = tf.data.Dataset.from_tensor_slices(((x, ones), (y, ones)))
    dataset = dataset.batch(GLOBAL_BATCH, drop_remainder=True)
    steps_per_epoch = len(x) // GLOBAL_BATCH
    local_batch = distribution.distribute_dataset(dataset).element_spec[0][0]

    probe = model.get_layer("probe").kernel
    probe_index = [id(v) for v in model.trainable_variables].index(id(probe))
    lr_log = os.path.join(args.out, f"lr-{pid}.log")
    marker = os.path.join(args.out, f"stopped-{pid}")

    def probe_value():
        """The probe's current value, read without syncing `fit`'s state
        into the variables (a sync at every step would hide from AutoLR
        the emptied variables that it meets in any other run)."""
        state = getattr(model, "_jax_state", None)
        if state and not model._jax_state_synced:
            value = state["trainable_variables"][probe_index]
        else:  # Epoch start, or a callback synced (or rolled back).
            value = probe.value
        return float(np.asarray(value)[0, 0])

    class Job(keras.callbacks.Callback):
        """Logs each step's applied LR; stops at `--stop-at`."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            self.before = probe_value()

        def on_train_batch_end(self, batch, logs=None):
            step = self.epoch * steps_per_epoch + batch
            applied = (self.before - probe_value()) / PROBE_WEIGHT
            with open(lr_log, "a") as f:
                f.write(f"{step} {applied!r}\n")
            if step + 1 == args.stop_at and not os.path.exists(marker):
                open(marker, "w").close()
                time.sleep(WAIT_TO_BE_KILLED_S)
                os._exit(3)

    # Job first: it reads the probe after each step before AutoLR acts on
    # the step's loss (a rollback puts back the probe with the weights).
    callbacks = [Job()]
    autolr_dir = None
    if args.backup:
        # One directory per process: AutoLR's state store and
        # BackupAndRestore each expect a single writer.
        backup = os.path.join(args.backup, f"process-{pid}")
        autolr_dir = os.path.join(backup, "autolr")
    autolr = AutoLR(verbose=0, backup_dir=autolr_dir, **AUTOLR)
    callbacks.append(autolr)
    if args.backup:
        callbacks.append(
            keras.callbacks.BackupAndRestore(os.path.join(backup, "model"))
        )
    history = model.fit(
        dataset.repeat(),
        steps_per_epoch=steps_per_epoch,
        epochs=args.epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )

    ctl = autolr.controller
    weights = [np.asarray(w) for w in model.get_weights()]
    mesh = distribution.device_mesh
    result = {
        "process_index": pid,
        "process_count": jax.process_count(),
        "device_count": len(jax.devices()),
        "local_device_count": jax.local_device_count(),
        "mesh_size": int(np.size(mesh.devices)),
        "variable_devices": sorted(
            {len(v.value.sharding.device_set) for v in model.variables}
        ),
        "variables_replicated": all(
            v.value.sharding.is_fully_replicated for v in model.variables
        ),
        "data_sharding": str(
            distribution.get_data_layout((GLOBAL_BATCH, 64)).axes
        ),
        "local_batch": int(local_batch.shape[0]),
        "steps_per_epoch": steps_per_epoch,
        "epochs_run": len(history.epoch),
        "events": ctl.events,
        "state": ctl.get_state(),
        "total_steps": ctl.total_steps,
        "lr": ctl.lr_at(np.arange(ctl.total_steps)).tolist(),
        "weights": np.concatenate([w.ravel() for w in weights]).tolist(),
    }
    with open(os.path.join(args.out, f"result-{pid}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
