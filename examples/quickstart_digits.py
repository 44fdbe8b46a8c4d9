"""Quickstart: AutoLR and AdamP on scikit-learn's digits, then the plot.

    python examples/quickstart_digits.py [--quick]

No learning rate is given anywhere. AutoLR raises the LR from 1e-4 every
step, and when the training loss has passed its minimum it lands at half
the LR at that minimum and decays to 0 at the end of the epoch budget. The plot
shows the LR it chose and the loss it based the choice on. The digits ship
with scikit-learn: nothing is downloaded.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Less TensorFlow noise.

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_autolr  # noqa: E402
from keras_autolr import AdamP, AutoLR  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description="AutoLR on digits.")
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument("--plot", default="quickstart_digits.png")
    args = parser.parse_args()
    epochs = 10 if args.quick else 40

    # 1,797 8x8 images, as 64 pixel values in [0, 1].
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        (x / 16.0).astype("float32"), y, test_size=0.2, random_state=0
    )

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    # The optimizer's learning rate is not used: AutoLR sets it every step.
    model.compile(
        optimizer=AdamP(weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # `epochs` is the budget the decay ends with; here that of fit().
    autolr = AutoLR()
    model.fit(
        x_train,
        y_train,
        batch_size=128,
        epochs=epochs,
        callbacks=[autolr],
        verbose=0,
    )

    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    event = autolr.controller.switch_event
    print(f"Peak LR chosen by AutoLR: {event['peak_lr']:.3g}")
    print(f"Test accuracy: {accuracy:.4f}")
    if args.plot:
        keras_autolr.plot(autolr, args.plot, title="AutoLR on digits")
        print(f"Plot saved to {os.path.abspath(args.plot)}")


if __name__ == "__main__":
    main()
