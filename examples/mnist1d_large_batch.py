"""Large-batch training on MNIST-1D with LAMB, AutoLR and steps_per_execution.

    python examples/mnist1d_large_batch.py [--quick]

MNIST-1D (Greydanus, 2020) is a 1-D, 40-sample analogue of MNIST that is
hard enough to separate models yet trains on a CPU. The `mnist1d` package
(`pip install mnist1d`) generates it here from ten templates with
`make_dataset`: nothing is downloaded. With a batch of 2048 the right peak
LR is far from the small-batch one; AutoLR finds it during warmup. With
`steps_per_execution` Keras runs several steps per call and logs one mean
loss per chunk; the train step still records the loss of every step for
AutoLR, which reads them at its tests, and sets the LR of every step.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Less TensorFlow noise.

import keras  # noqa: E402
from mnist1d.data import get_dataset_args, make_dataset  # noqa: E402

import keras_autolr  # noqa: E402
from keras_autolr import LAMB, AutoLR  # noqa: E402

BATCH_SIZE = 2048
STEPS_PER_EXECUTION = 4


def load(num_samples):
    """MNIST-1D as (N, 40, 1) float32 signals, 80% train and 20% test."""
    args = get_dataset_args()
    args.num_samples = num_samples  # The package default is 5,000.
    data = make_dataset(args)  # Pure NumPy, seeded (args.seed).
    x, x_test = (data[k].astype("float32")[..., None] for k in ("x", "x_test"))
    return (x, data["y"]), (x_test, data["y_test"])


def build_model():
    """A small 1-D CNN (about 10k parameters)."""
    conv = {"padding": "same", "activation": "gelu"}
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Conv1D(32, 5, **conv),
            keras.layers.Conv1D(32, 3, strides=2, **conv),
            keras.layers.Conv1D(32, 3, strides=2, **conv),
            keras.layers.Conv1D(32, 3, **conv),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(10),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description="AutoLR on MNIST-1D.")
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument("--plot", default="mnist1d_large_batch.png")
    args = parser.parse_args()
    num_samples, epochs = (10_000, 40) if args.quick else (40_000, 60)

    print(f"Generating {num_samples:,} MNIST-1D samples...")
    (x_train, y_train), (x_test, y_test) = load(num_samples)

    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(
        # Biases skip weight decay and the trust ratio, as in the LAMB paper.
        optimizer=LAMB(
            weight_decay=1e-2,
            exclude_from_weight_decay=["bias"],
            exclude_from_layer_adaptation=["bias"],
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    autolr = AutoLR()
    model.fit(
        x_train,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        callbacks=[autolr],
        verbose=0,
    )

    _, accuracy = model.evaluate(
        x_test, y_test, batch_size=BATCH_SIZE, verbose=0
    )
    ctl = autolr.controller
    print(
        f"{ctl.total_steps} steps of batch {BATCH_SIZE}, "
        f"{STEPS_PER_EXECUTION} per execution; landing LR {ctl.landing_lr:.3g}"
    )
    print(f"Test accuracy: {accuracy:.4f}")
    if args.plot:
        keras_autolr.plot(
            autolr,
            args.plot,
            title=f"AutoLR + LAMB on MNIST-1D, batch {BATCH_SIZE}",
        )
        print(f"Plot saved to {os.path.abspath(args.plot)}")


if __name__ == "__main__":
    main()
