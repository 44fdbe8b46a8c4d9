"""AutoLR on several hosts: JAX `keras.distribution`, or TensorFlow's
`MultiWorkerMirroredStrategy`.

On one machine, as N local processes that stand for N hosts (each with
`--local-devices` virtual CPU devices; nothing is downloaded):

    python examples/multi_host.py --engine jax --launch-local 2
    python examples/multi_host.py --engine tensorflow --launch-local 2

On each of N hosts, the same command with that host's index:

    # JAX: host 0 is the coordinator.
    python examples/multi_host.py --engine jax --coordinator HOST0:1234 \\
        --num-processes N --process-id I --backup-dir /local/backup
    # TensorFlow: every worker's address, the same list on every host.
    python examples/multi_host.py --engine tensorflow \\
        --workers HOST0:2222,HOST1:2222 --index I

Each process builds the same global dataset and the same initial weights
(fixed seeds); Keras gives each its share of every global batch, and the
replicas average their gradients, so every process sees the same loss and
its AutoLR makes the same decisions: each prints the same line when warmup
ends. Nothing is exchanged between the AutoLR callbacks.

JAX (`keras.distribution.initialize` + `DataParallel`) works with Keras
3.15 and JAX 0.10 (on CPU, over Gloo collectives). Give each process its
own `backup_dir` (here DIR/process-I/...): the AutoLR state files and
`BackupAndRestore` each expect one writer; after a preemption, rerun every
process with the same command and they resume from the last epoch end.

TensorFlow: Keras 3's `fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585; with Keras 3.15 and TensorFlow 2.21 it raises
"Attempt to convert a value (PerReplica...) with an unsupported type ... to
a Tensor" before the first step). The launch is shown as it will work once
that is fixed; until then use JAX, or `MirroredStrategy` on one host.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Less TensorFlow noise.

GLOBAL_BATCH = 64
UPSTREAM_TF_ERROR = "PerReplica"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--engine", choices=("jax", "tensorflow"), default="jax"
    )
    parser.add_argument(
        "--launch-local",
        type=int,
        metavar="N",
        help="run N processes of this script on this machine",
    )
    parser.add_argument(
        "--local-devices",
        type=int,
        default=2,
        help="virtual CPU devices per process with --launch-local (JAX)",
    )
    parser.add_argument("--coordinator", help="JAX: HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--workers", help="TensorFlow: HOST:PORT,HOST:PORT,...")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument(
        "--backup-dir",
        help="resume after preemption from here (one subdirectory each)",
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------
# The training, the same for both engines.


def global_dataset():
    """Digits as global batches, the same on every process, and the test
    split. An epoch is one pass over the training split."""
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        (x / 16.0).astype("float32"), y, test_size=0.2, random_state=0
    )
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train = train.batch(GLOBAL_BATCH, drop_remainder=True)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test))
    test = test.batch(GLOBAL_BATCH, drop_remainder=True)
    steps = len(x_train) // GLOBAL_BATCH, len(x_test) // GLOBAL_BATCH
    return train, test, *steps


def build_model():
    import keras

    from keras_autolr import AdamP

    keras.utils.set_random_seed(0)  # The same initial weights everywhere.
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=AdamP(weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def callbacks(args, process):
    """AutoLR (first), and with `--backup-dir` a per-process backup."""
    import keras

    from keras_autolr import AutoLR

    if not args.backup_dir:
        return [AutoLR()]
    mine = os.path.join(args.backup_dir, f"process-{process}")
    return [
        AutoLR(backup_dir=os.path.join(mine, "autolr")),
        keras.callbacks.BackupAndRestore(os.path.join(mine, "model")),
    ]


def train(args, process, num_processes, replicas, scope=None):
    train_ds, test_ds, steps, test_steps = global_dataset()
    if scope is None:
        model = build_model()
    else:
        with scope:
            model = build_model()
    epochs = 6 if args.quick else args.epochs
    autolr, *others = callbacks(args, process)
    model.fit(
        # Keras's per-process share of a dataset has no known length: say
        # how many steps make an epoch (AutoLR plans its budget with it).
        train_ds.repeat(),
        steps_per_epoch=steps,
        epochs=epochs,
        shuffle=False,  # Shuffle in the dataset (`Dataset.shuffle(n, seed)`).
        callbacks=[autolr, *others],
        verbose=0,
    )
    _, accuracy = model.evaluate(test_ds, steps=test_steps, verbose=0)
    event = autolr.controller.switch_event
    print(
        f"process {process}/{num_processes}, {replicas} replicas: "
        f"AutoLR ended warmup at step {event['step']} ({event['reason']}), "
        f"decay from {event['peak_lr']:.6g}"
    )
    print(f"Test accuracy: {accuracy:.4f}")


# ----------------------------------------------------------------------
# The engines.


def run_jax(args):
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras

    if args.num_processes > 1:
        # Before any JAX computation. On CPU the processes reduce over Gloo
        # (JAX's default CPU collectives); GPUs and TPUs need nothing here.
        keras.distribution.initialize(
            job_addresses=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    # Data parallel over every device of every process: variables are
    # replicated, each global batch is split along the mesh.
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    train(args, jax.process_index(), jax.process_count(), jax.device_count())


def run_tensorflow(args):
    os.environ["KERAS_BACKEND"] = "tensorflow"
    workers = args.workers.split(",") if args.workers else []
    if workers:
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": args.index},
            }
        )
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    try:
        train(
            args,
            args.index,
            max(len(workers), 1),
            strategy.num_replicas_in_sync,
            scope=strategy.scope(),
        )
    except ValueError as error:
        if UPSTREAM_TF_ERROR in str(error):
            print(
                "Keras's fit failed under MultiWorkerMirroredStrategy: "
                "keras-team/keras#20585, not AutoLR. Use --engine jax.",
                file=sys.stderr,
            )
        raise


# ----------------------------------------------------------------------
# --launch-local: N processes on this machine.


def free_ports(n):
    """`n` distinct free TCP ports on localhost."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch_local(args):
    """Runs `args.launch_local` processes of this script, as the hosts of
    one job, relays their output line by line, and returns the first
    non-zero exit code (0 if all succeed). If one fails, the others, which
    would wait for it in a collective, are stopped."""
    n = args.launch_local
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    common = ["--engine", args.engine, "--epochs", str(args.epochs)]
    common += ["--quick"] if args.quick else []
    common += ["--backup-dir", args.backup_dir] if args.backup_dir else []
    if args.engine == "jax":
        # Stand-ins for each host's accelerators: virtual CPU devices.
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = (
            f"--xla_force_host_platform_device_count={args.local_devices}"
        )
        (port,) = free_ports(1)
        places = [
            [f"--coordinator=localhost:{port}", f"--num-processes={n}"]
            + [f"--process-id={i}"]
            for i in range(n)
        ]
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # One CPU replica per worker.
        workers = ",".join(f"localhost:{p}" for p in free_ports(n))
        places = [[f"--workers={workers}", f"--index={i}"] for i in range(n)]
    processes = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *common, *place],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for place in places
    ]
    relays = [
        threading.Thread(target=_relay, args=(i, p.stdout))
        for i, p in enumerate(processes)
    ]
    for relay in relays:
        relay.start()
    while None in (codes := [p.poll() for p in processes]):
        if any(codes):  # One failed: the others would wait forever.
            for p in processes:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    for relay in relays:
        relay.join()
    print(f"exit codes: {codes}")
    return next((c for c in codes if c), 0)


def _relay(i, stream):
    for line in stream:
        print(f"[process {i}] {line}", end="", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.launch_local:
        return launch_local(args)
    if args.engine == "jax":
        run_jax(args)
    else:
        run_tensorflow(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
