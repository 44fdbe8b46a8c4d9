"""`plot`: one figure that shows what AutoLR decided, and why.

Two panels over the optimizer steps (`panels`): the learning rate of every
step, and the losses it was decided on. A run of the `AutoLR` callback also
knows its epochs (`keras_autolr.keras.epoch_log`): an epoch axis on top,
and the validation losses.

matplotlib is imported on the first call (`pip install keras-autolr[plot]`).
The figure is drawn on its own Agg canvas, never through `pyplot`: it works
without a display, leaves the user's backend alone and keeps no global
figure alive.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from keras_autolr.core.controller import AutoLRController
from keras_autolr.keras.epoch_log import EpochLog
from keras_autolr.plotting import panels


def plot(
    run, path=None, title=None, *, figsize=(10.0, 7.5), dpi=100, log_loss=False
):
    """Plots the learning rate and the loss of an AutoLR run.

    One figure, two panels sharing the step axis. Top: the LR of every step
    (log scale), warmup shaded, the LR at the detected loss minimum, the
    roll-back at the switch and the decay; steps not run yet are dashed.
    Bottom: the training loss recorded by the controller (one point per
    bin), the Gaussian-process posterior mean of the warmup losses with its
    2-sigma band (the curve the decision was taken on, `x = 1` being the
    switch), the smoothed minimum and the switch step. The panel title says
    the decision in words. A run still in warmup is plotted as far as it
    went, with the LR it would follow if the warmup cap came first.

    A run of the `AutoLR` callback (or its saved state) adds an epoch axis
    on top, and its validation losses (`val_loss` at each epoch end that
    has one) as markers on the loss panel. A controller, or its own
    `get_state()`, knows no epochs: steps only.

    Args:
        run: the run to plot: an `AutoLR` callback after `fit`, an
            `AutoLRController`, a state dict from `get_state()`, or the path
            of a saved state (e.g. an `autolr-epoch-XXXXXX.json` file that
            `AutoLR(backup_dir=...)` writes).
        path: where to save the figure, as a PNG (or any other format
            matplotlib infers from the extension). Defaults to `None`: not
            saved.
        title: a headline above the decision, e.g. the name of the
            experiment. Defaults to `None`: the decision alone.
        figsize: `(width, height)` of the figure in inches. Defaults to
            `(10.0, 7.5)`.
        dpi: resolution in dots per inch; the PNG is `figsize * dpi`
            pixels. Defaults to `100`.
        log_loss: draw the loss on a log scale, for losses that span
            decades; every loss must be positive. Defaults to `False`.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if `run` is none of the above, another argument is
            invalid, or `log_loss=True` with a loss that is not positive.

    Example:

    ```python
    import keras_autolr

    autolr = keras_autolr.AutoLR()
    model.fit(x, y, batch_size=4096, epochs=30, callbacks=[autolr])
    keras_autolr.plot(autolr, "autolr.png")
    # Later, from the state a run saved with AutoLR(backup_dir="ckpt"):
    keras_autolr.plot("ckpt/autolr-epoch-000030.json", "autolr.png")
    ```
    """
    controller, epoch_log = _as_run(run)
    if path is not None and not isinstance(path, str | os.PathLike):
        raise ValueError(
            "Argument `path` must be a file path or None. "
            f"Received: path={path!r}"
        )
    if title is not None and not isinstance(title, str):
        raise ValueError(
            f"Argument `title` must be a string or None. Received: "
            f"title={title!r}"
        )
    if not (
        isinstance(figsize, tuple | list)
        and len(figsize) == 2
        and all(_is_positive(v) for v in figsize)
    ):
        raise ValueError(
            "Argument `figsize` must be a pair of positive numbers "
            f"(width, height) in inches. Received: figsize={figsize!r}"
        )
    if not _is_positive(dpi):
        raise ValueError(
            f"Argument `dpi` must be a positive number. Received: dpi={dpi!r}"
        )
    if not isinstance(log_loss, bool):
        raise ValueError(
            "Argument `log_loss` must be True or False. Received: "
            f"log_loss={log_loss!r}"
        )
    if log_loss:
        _check_positive(controller, epoch_log)
    figure_class, canvas_class = _matplotlib()
    figure = figure_class(figsize=tuple(figsize), dpi=dpi, layout="constrained")
    canvas_class(figure)
    panels.draw(figure, controller, epoch_log, log_loss)
    if title is not None:
        figure.suptitle(title, fontweight="bold")
    if path is not None:
        figure.savefig(path)
    return figure


def _check_positive(ctl: AutoLRController, epoch_log: EpochLog) -> None:
    """Raises `ValueError` unless every finite loss of the run, training
    and validation, is positive: a log scale cannot show the others."""
    _, means, _ = ctl.loss_bins()
    validation = [value for _, value in epoch_log.validation_losses]
    losses = np.concatenate([means, validation])
    lowest = float(np.min(losses[np.isfinite(losses)], initial=np.inf))
    if lowest <= 0:
        raise ValueError(
            "Argument `log_loss=True` needs positive losses, but the run "
            f"has a loss of {lowest:g}, which a log scale cannot show. Plot "
            "it with `log_loss=False`. Received: log_loss=True"
        )


def _as_run(run: Any) -> tuple[AutoLRController, EpochLog]:
    """The controller of `run` and what it knows in epochs."""
    if isinstance(run, AutoLRController):
        return run, EpochLog()
    if isinstance(run, str | os.PathLike):
        with open(run) as f:
            run = json.load(f)
    if isinstance(run, dict):
        return AutoLRController.from_state(run), EpochLog.from_state(run)
    controller = getattr(run, "controller", False)
    if isinstance(controller, AutoLRController):
        return controller, run.epoch_log
    if controller is None:
        raise ValueError(
            "Argument `run` is an AutoLR callback that has not trained yet. "
            "Plot it after `model.fit(..., callbacks=[autolr])`."
        )
    raise ValueError(
        "Argument `run` must be an AutoLR callback, an AutoLRController, a "
        "state dict from `get_state()` or the path of a saved state file. "
        f"Received: run={run!r}"
    )


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "keras_autolr.plot needs matplotlib. Install it with "
            "`pip install keras-autolr[plot]` (or `pip install matplotlib`)."
        ) from error
    return Figure, FigureCanvasAgg


def _is_positive(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
