"""A preemptible training job, for the kill-and-resume tests.

    python tests/resumable.py WORKDIR [--kill-at STEP | --crash-in POINT]

Trains an MLP on digits with Adam, AutoLR(backup_dir=...) and
BackupAndRestore, logging the LR of every step as it goes. With
`--kill-at`, the process SIGKILLs itself after that global step the first
time it gets there (a marker file remembers), like a preempted VM; running
the same command again resumes. With `--crash-in`, it dies the same way
inside AutoLR's first save of a weight copy: `state`, after the temporary
file of the state that names it is written and before it is renamed;
`copy`, likewise for the copy itself; `between`, after the copy is in place
and before the state is written. The result of a finished run is written to
WORKDIR/result.json.
"""

import argparse
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPOCHS = 10


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--crash-in", choices=["state", "copy", "between"])
    args = parser.parse_args(argv)

    import keras

    from keras_autolr import AutoLR

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import support

    x, y = support.digits()
    model = support.digits_mlp()
    log_path = os.path.join(args.workdir, "lr.log")
    marker = os.path.join(args.workdir, "killed")

    class Job(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            optimizer = self.model.optimizer
            step = int(optimizer.iterations.numpy())
            with open(log_path, "a") as f:
                f.write(f"{step} {float(optimizer.learning_rate)!r}\n")

        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step == args.kill_at and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    if args.crash_in and not os.path.exists(marker):
        crash_in_first_copy_save(args.crash_in, marker)
    autolr = AutoLR(verbose=0, backup_dir=os.path.join(args.workdir, "autolr"))
    model.fit(
        x,
        y,
        batch_size=64,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[
            autolr,
            keras.callbacks.BackupAndRestore(
                os.path.join(args.workdir, "backup")
            ),
            Job(),
        ],
    )
    ctl = autolr.controller
    with open(os.path.join(args.workdir, "result.json"), "w") as f:
        json.dump(
            {
                "events": ctl.events,
                "steps": ctl.steps,
                "weights": [w.tolist() for w in model.get_weights()],
            },
            f,
        )
    return 0


def crash_in_first_copy_save(point, marker):
    """SIGKILLs this process at `point` of the first save of AutoLR's that
    writes a weight copy."""
    from keras_autolr.keras import backup

    replace, write = os.replace, backup.StateStore._write
    seen = {"copy": False}

    def die():
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)

    def crashing_replace(src, dst):
        name = os.path.basename(dst)
        is_copy = name.startswith("autolr-weights-")
        if is_copy and point == "copy":
            die()
        if name.startswith("autolr-epoch-") and seen["copy"]:
            if point == "state":
                die()
        seen["copy"] |= is_copy
        return replace(src, dst)

    def crashing_write(self, path, data):
        if point == "between" and seen["copy"] and path.endswith(".json"):
            die()
        return write(self, path, data)

    backup.os.replace = crashing_replace
    backup.StateStore._write = crashing_write


if __name__ == "__main__":
    sys.exit(main())
