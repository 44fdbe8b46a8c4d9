"""One worker of a TensorFlow `MultiWorkerMirroredStrategy` run with AutoLR.

    KERAS_BACKEND=tensorflow python tests/tf_multi_worker.py OUT \
        --workers localhost:P0,localhost:P1 --index I

Run by tests/test_jax_distribution.py as two subprocesses (never imported:
`TF_CONFIG` must be set before TensorFlow starts its collectives). Trains
the MLP of `support.digits_mlp` on digits with Adam and AutoLR under the
strategy and writes OUT/result-I.json: the controller's events and LR
trajectory, and the final weights. With one address in `--workers`, a
single worker (the reference run).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GLOBAL_BATCH = 64
EPOCHS = 12


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--workers", required=True)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": args.workers.split(",")},
            "task": {"type": "worker", "index": args.index},
        }
    )

    import keras
    import numpy as np
    import tensorflow as tf

    # The whole traceback in the log: the test tells the upstream failure
    # from any other by it.
    keras.config.disable_traceback_filtering()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import support

    from keras_autolr import AutoLR

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = support.digits()
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.batch(GLOBAL_BATCH, drop_remainder=True)
    options = tf.data.Options()
    # Every worker reads every global batch and takes its share of it.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = dataset.with_options(options)
    with strategy.scope():
        model = support.digits_mlp()
    autolr = AutoLR(verbose=0, bin_steps=8)
    model.fit(
        dataset.repeat(),
        steps_per_epoch=len(x) // GLOBAL_BATCH,
        epochs=EPOCHS,
        verbose=0,
        shuffle=False,
        callbacks=[autolr],
    )
    ctl = autolr.controller
    result = {
        "num_replicas": strategy.num_replicas_in_sync,
        "events": ctl.events,
        "lr": ctl.lr_at(np.arange(ctl.total_steps)).tolist(),
        "steps": ctl.steps,
        "weights": np.concatenate(
            [w.ravel() for w in model.get_weights()]
        ).tolist(),
    }
    with open(os.path.join(args.out, f"result-{args.index}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
