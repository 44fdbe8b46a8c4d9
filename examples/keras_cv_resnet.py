"""A KerasCV ResNetV2 with RandAugment, trained with AdamP and AutoLR.

    python examples/keras_cv_resnet.py [--quick]

Needs `pip install keras-cv==0.9.0`. The backbone is built from an explicit
configuration, not from a named preset: presets download weights, and this
example runs offline. The images are scikit-learn's digits, upsampled to
16x16 RGB so that `--quick` runs in about a minute on a CPU; swap in your
own `tf.data` pipeline of images and labels for real work. RandAugment runs
in the input pipeline, on batches.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Less TensorFlow noise.

import keras  # noqa: E402
import keras_cv  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_autolr  # noqa: E402
from keras_autolr import AdamP, AutoLR  # noqa: E402

IMAGE_SIZE = 16
BATCH_SIZE = 128


def images(x):
    """8x8 digits in [0, 16] as 16x16x3 float32 images in [0, 1]."""
    x = tf.reshape(tf.cast(x, "float32") / 16.0, (-1, 8, 8, 1))
    x = tf.image.resize(x, (IMAGE_SIZE, IMAGE_SIZE))
    return tf.image.grayscale_to_rgb(x)


def datasets(seed=0):
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed
    )
    augment = keras_cv.layers.RandAugment(
        value_range=(0, 1), augmentations_per_image=2, magnitude=0.3, seed=seed
    )
    train = (
        tf.data.Dataset.from_tensor_slices((images(x_train), y_train))
        .shuffle(len(x_train), seed=seed)
        .batch(BATCH_SIZE)
        .map(lambda x, y: (augment(x, training=True), y))
        .prefetch(tf.data.AUTOTUNE)
    )
    test = tf.data.Dataset.from_tensor_slices((images(x_test), y_test))
    return train, test.batch(BATCH_SIZE)


def build_model():
    """A small ResNetV2 (3 stages of 2 bottleneck blocks), a linear head."""
    backbone = keras_cv.models.ResNetV2Backbone(
        stackwise_filters=[16, 32, 64],  # Bottlenecks output 4x as many.
        stackwise_blocks=[2, 2, 2],  # KerasCV 0.9 needs 2 or more per stage.
        stackwise_strides=[1, 2, 2],
        include_rescaling=False,  # The images are already in [0, 1].
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    )
    return keras.Sequential(
        [
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description="AutoLR with KerasCV.")
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument("--plot", default="keras_cv_resnet.png")
    args = parser.parse_args()
    # --quick: too few steps for BatchNorm's moving statistics to settle, so
    # the test accuracy stays well below that of the full run.
    epochs = 10 if args.quick else 40

    keras.utils.set_random_seed(0)
    train, test = datasets()
    model = build_model()
    model.compile(
        optimizer=AdamP(weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    autolr = AutoLR()
    # shuffle=False: the dataset shuffles itself (and Keras would warn).
    model.fit(
        train, epochs=epochs, callbacks=[autolr], shuffle=False, verbose=0
    )

    _, accuracy = model.evaluate(test, verbose=0)
    print(f"Landing LR chosen by AutoLR: {autolr.controller.landing_lr:.3g}")
    print(f"Test accuracy: {accuracy:.4f}")
    if args.plot:
        keras_autolr.plot(autolr, args.plot, title="KerasCV ResNetV2 + AdamP")
        print(f"Plot saved to {os.path.abspath(args.plot)}")


if __name__ == "__main__":
    main()
