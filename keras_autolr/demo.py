"""The demo: large-batch training on scikit-learn's digits with AutoLR.

No download: `sklearn.datasets.load_digits` ships 1,797 real 8x8 digits.
Run it with `python -m keras_autolr demo`; it also saves the plot of its run
(`keras_autolr.plot`) to `autolr_demo.png`, or to `--plot PATH`.
`--reference` runs the AutoWU paper's setting (`AutoLR.reference`), and
`--smoother tfp` smooths with TensorFlow Probability's GP.
"""

import os
import time

import numpy as np

DEFAULT_EPOCHS = 60
DEFAULT_BATCH = 256
DEFAULT_PLOT = "autolr_demo.png"


def load_digits_split(seed=0):
    """Digits as (N, 8, 8, 1) float32 in [0, 1]; 80% train, 20% test."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    y = y.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def build_model():
    """A small CNN for 8x8 digits (about 12k parameters)."""
    import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(
                32, 3, strides=2, padding="same", activation="relu"
            ),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def make_optimizer(name):
    import keras

    from keras_autolr.optimizers import AdamP

    if name == "adamp":
        return AdamP(weight_decay=1e-4)
    if name == "lamb":
        return keras.optimizers.Lamb(weight_decay=1e-4)
    raise ValueError(
        f"Argument `optimizer` must be 'adamp' or 'lamb'. Received: {name!r}"
    )


def run(
    epochs=DEFAULT_EPOCHS,
    batch_size=DEFAULT_BATCH,
    optimizer="adamp",
    seed=0,
    verbose=1,
    reference=False,
    smoother="numpy",
):
    """Trains the demo model with AutoLR; returns `(autolr, test_accuracy)`.

    `reference=True` uses `AutoLR.reference` (the AutoWU paper's setting);
    `smoother` is the GP of the tests, `"numpy"` or `"tfp"`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_autolr import AutoLR

    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_digits_split(seed)
    model = build_model()
    model.compile(
        optimizer=make_optimizer(optimizer),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    make = AutoLR.reference if reference else AutoLR
    autolr = make(epochs=epochs, verbose=verbose, smoother=smoother)
    model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        callbacks=[autolr],
        verbose=0,
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return autolr, float(accuracy)


def main(args):
    start = time.perf_counter()
    print(
        f"keras-autolr demo: a small CNN on scikit-learn digits (1,437 train "
        f"/ 360 test), batch {args.batch_size}, {args.epochs} epochs, "
        f"optimizer {args.optimizer}, no learning rate given; "
        + ("the AutoWU paper's setting" if args.reference else "defaults")
        + f", smoother {args.smoother}."
    )
    autolr, accuracy = run(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        seed=args.seed,
        reference=args.reference,
        smoother=args.smoother,
    )
    ctl = autolr.controller
    event = ctl.switch_event
    print(
        f"AutoLR decided: warmup {event['reason']} at step {event['step']} "
        f"of {ctl.total_steps}; decay from {event['peak_lr']:.3g} "
        f"(highest LR run {event['lr_before']:.3g})."
    )
    print(f"Final test accuracy: {accuracy:.4f}")
    if args.plot:
        from keras_autolr import plot

        plot(autolr, args.plot)
        print(f"Plot of the run: {os.path.abspath(args.plot)}")
    print(f"Done in {time.perf_counter() - start:.0f} s.")
    return 0
