"""The figure of a run as a TensorBoard image at the end of `fit`.

Where a `keras.callbacks.TensorBoard` is among the callbacks of `fit`,
`AutoLR` draws `keras_autolr.plot` of its run when training ends and writes
it, through `tf.summary`, into that TensorBoard's training log directory
(the first TensorBoard's, where there are several), beside its scalars.
"""

import warnings

import keras
import numpy as np

from keras_autolr.keras import compat

# The image's tag in TensorBoard.
TAG = "autolr/schedule"


def log_plot(autolr, callbacks):
    """Writes the plot of `autolr`'s run as the image `TAG`, at its final
    step (the optimizer steps run), into the training log directory of the
    first `keras.callbacks.TensorBoard` in `callbacks`.

    Does nothing without a TensorBoard, and nothing, silently, without
    matplotlib (the `plot` extra). Any other failure is a `RuntimeWarning`
    that names it: the end of `fit` goes on.

    Args:
        autolr: the `AutoLR` callback, after training.
        callbacks: the callbacks of its `fit`.
    """
    boards = [
        c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)
    ]
    if not boards:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    board = boards[0]
    try:
        _write(autolr, compat.train_log_dir(board))
    except Exception as error:
        warnings.warn(
            f"AutoLR could not log its plot to TensorBoard in {board.log_dir} "
            f"({type(error).__name__}: {error}). Training has ended as "
            "usual; `keras_autolr.plot(autolr, path)` draws it.",
            RuntimeWarning,
            stacklevel=3,
        )


def _write(autolr, directory):
    """Writes the plot of `autolr` into the event files of `directory`."""
    import tensorflow as tf

    from keras_autolr.plotting import plot

    canvas = plot(autolr).canvas
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())  # (height, width, RGBA)
    writer = tf.summary.create_file_writer(directory)
    try:
        with writer.as_default():
            step = autolr.controller.steps
            tf.summary.image(TAG, pixels[np.newaxis], step=step)
    finally:
        writer.close()
