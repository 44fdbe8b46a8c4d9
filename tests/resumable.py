"""A preemptible training job, for the kill-and-resume tests.

    python tests/resumable.py WORKDIR [--kill-at STEP]

Trains an MLP on digits with Adam, AutoLR(backup_dir=...) and
BackupAndRestore, logging the LR of every step as it goes. With
`--kill-at`, the process SIGKILLs itself after that global step the first
time it gets there (a marker file remembers), like a preempted VM; running
the same command again resumes. The result of a finished run is written to
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


if __name__ == "__main__":
    sys.exit(main())
