"""What TensorBoard and CSVLogger record of AutoLR's logs.

AutoLR adds `learning_rate` (the LR of the last step run) and `autolr_phase`
to the logs of the callbacks after it. Keras's `TensorBoard` writes batch
logs as `batch_<name>` at its own batch counter, which counts calls, i.e.
chunks of `steps_per_execution` steps: point `k` (from 1) is the LR of step
`k * steps_per_execution - 1`. At epoch end TensorBoard replaces
`learning_rate` by the optimizer's `learning_rate`, which is the LR of the
next step. `CSVLogger` writes the epoch logs as they are. At the end of
`fit`, AutoLR adds its plot to TensorBoard's training logs, as an image.
"""

import csv
import os
import re
import sys
import warnings

import keras
import numpy as np
import pytest
import support
import tensorflow as tf

import keras_autolr
from keras_autolr import AutoLR

# Short budgets at steps_per_execution=4: the logs, not the detection, are
# under test here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:AutoLR tests the loss minimum where:RuntimeWarning"
)

EPOCHS = 3
STEPS_PER_EPOCH = 8


@pytest.fixture(scope="module", params=[1, 4], ids=lambda n: f"chunk{n}")
def run(request, tmp_path_factory):
    """A 24-step fit logged by TensorBoard and CSVLogger after AutoLR."""
    # keras.callbacks.TensorBoard writes through the `tensorboard` package,
    # which tensorflow-cpu does not install.
    support.require("tensorboard")
    log_dir = tmp_path_factory.mktemp("logs")
    x, y = support.digits(32 * STEPS_PER_EPOCH)
    model = support.digits_mlp(hidden=(), steps_per_execution=request.param)
    autolr = AutoLR(verbose=0)
    with warnings.catch_warnings():
        # Chunks of 4 in 24 steps leave room for one test before the cap.
        warnings.filterwarnings("ignore", "AutoLR's budget", RuntimeWarning)
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[
                autolr,
                keras.callbacks.TensorBoard(log_dir, update_freq=1),
                keras.callbacks.CSVLogger(log_dir / "log.csv"),
            ],
        )
    return autolr.controller, request.param, log_dir


def summary_values(directory, plugin):
    """`(event, value)` of each summary value of `plugin` ("scalars",
    "images") in the event files there."""
    for name in sorted(os.listdir(directory)):
        if not name.startswith("events.out.tfevents."):
            continue
        path = os.path.join(directory, name)
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    yield event, value


def read_scalars(directory):
    """`{tag: {step: value}}` of the scalars in the event files there."""
    scalars = {}
    for event, value in summary_values(directory, "scalars"):
        scalar = float(tf.make_ndarray(value.tensor))
        scalars.setdefault(value.tag, {})[event.step] = scalar
    return scalars


def read_images(directory):
    """`{tag: {step: PNG bytes}}` of the images in the event files there."""
    images = {}
    for event, value in summary_values(directory, "images"):
        # Width, height, then the encoded images.
        (png,) = value.tensor.string_val[2:]
        images.setdefault(value.tag, {})[event.step] = png
    return images


def test_tensorboard_batch_scalars_are_the_lr_of_each_step(run):
    ctl, chunk, log_dir = run
    scalars = read_scalars(log_dir / "train")
    lr, phase = scalars["batch_learning_rate"], scalars["batch_autolr_phase"]
    points = np.arange(1, EPOCHS * STEPS_PER_EPOCH // chunk + 1)
    assert sorted(lr) == sorted(phase) == points.tolist()
    last_steps = points * chunk - 1
    np.testing.assert_allclose(
        [lr[k] for k in points], ctl.lr_at(last_steps), rtol=1e-6
    )
    expected_phase = (last_steps >= ctl.switch_step).astype(float)
    np.testing.assert_array_equal([phase[k] for k in points], expected_phase)
    assert set(expected_phase) == {0.0, 1.0}  # Both phases were logged.


def test_tensorboard_epoch_scalars(run):
    ctl, _, log_dir = run
    scalars = read_scalars(log_dir / "train")
    epochs = np.arange(EPOCHS)
    ends = (epochs + 1) * STEPS_PER_EPOCH
    assert sorted(scalars["epoch_autolr_phase"]) == epochs.tolist()
    np.testing.assert_array_equal(
        [scalars["epoch_autolr_phase"][e] for e in epochs],
        (ends - 1 >= ctl.switch_step).astype(float),
    )
    # TensorBoard's own value: the optimizer's LR, i.e. of the next step
    # (computed in float32 in the graph), 0 after the last epoch.
    np.testing.assert_allclose(
        [scalars["epoch_learning_rate"][e] for e in epochs],
        ctl.lr_at(ends),
        rtol=1e-5,
        atol=1e-12,
    )


def test_csv_logger_columns_are_the_lr_of_the_last_step(run):
    ctl, _, log_dir = run
    with open(log_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))
    last_steps = np.arange(1, EPOCHS + 1) * STEPS_PER_EPOCH - 1
    np.testing.assert_allclose(
        [float(row["learning_rate"]) for row in rows],
        ctl.lr_at(last_steps),
        rtol=1e-12,
    )
    assert [int(row["autolr_phase"]) for row in rows] == (
        (last_steps >= ctl.switch_step).astype(int).tolist()
    )


def test_the_plot_is_an_image_at_the_final_step(run):
    ctl, _, log_dir = run
    images = read_images(log_dir / "train")
    assert list(images) == ["autolr/schedule"]
    # One image, at the optimizer steps run.
    assert list(images["autolr/schedule"]) == [ctl.steps] == [24]
    pixels = tf.io.decode_png(images["autolr/schedule"][24]).numpy()
    width, height = keras_autolr.plot(ctl).canvas.get_width_height()
    assert pixels.shape == (height, width, 4) == (750, 1000, 4)
    assert pixels.min() < pixels.max()  # Not a blank image.


def fit_with_tensorboard(log_dir):
    """A 2-epoch fit of a linear model with AutoLR and TensorBoard."""
    x, y = support.digits(32 * STEPS_PER_EPOCH)
    model = support.digits_mlp(hidden=())
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[AutoLR(verbose=0), keras.callbacks.TensorBoard(log_dir)],
    )
    return history.history


@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_a_plot_that_fails_warns_and_fit_ends(tmp_path, monkeypatch):
    support.require("tensorboard")

    def fail(run):
        raise RuntimeError("no figure today")

    monkeypatch.setattr("keras_autolr.plotting.plot", fail)
    match = re.escape(
        f"could not log its plot to TensorBoard in {tmp_path} "
        "(RuntimeError: no figure today)"
    )
    with pytest.warns(RuntimeWarning, match=match):
        history = fit_with_tensorboard(tmp_path)
    assert len(history["loss"]) == 2
    assert read_images(tmp_path / "train") == {}


@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_without_matplotlib_no_image_and_no_warning(tmp_path, monkeypatch):
    support.require("tensorboard")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    history = fit_with_tensorboard(tmp_path)  # filterwarnings = error.
    assert len(history["loss"]) == 2
    assert read_images(tmp_path / "train") == {}
    assert "epoch_loss" in read_scalars(tmp_path / "train")
