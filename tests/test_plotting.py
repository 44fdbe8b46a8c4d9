import json
import math
import os
import sys

import numpy as np
import pytest
import support

support.require("matplotlib")

import matplotlib.image as mpl_image  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import keras_autolr  # noqa: E402
from keras_autolr import AutoLRController, plotting  # noqa: E402
from keras_autolr.core import schedule  # noqa: E402
from keras_autolr.core.losses import detector_inputs  # noqa: E402


def lr_text(value):
    """The LR as the figure writes it, e.g. 0.0312 -> '3.1e-2'."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def legend_labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def line(ax, prefix):
    (found,) = [a for a in ax.get_lines() if a.get_label().startswith(prefix)]
    return found


def fed(steps, total_steps=1000, loss_at_nan=None):
    """A controller fed a noisy loss whose minimum is at LR 1e-2."""
    rng = np.random.default_rng(0)
    ctl = AutoLRController(total_steps=total_steps)
    lr = ctl.lr
    for step in range(steps):
        loss = 1.0 + 0.3 * (math.log10(lr) + 2.0) ** 2 + 0.05 * rng.normal()
        lr = ctl.step(math.nan if step == loss_at_nan else loss)
    return ctl


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    """A real fit that switches: an MLP on digits with Adam (about 3 s), 16
    steps per epoch, with a validation loss at each epoch end."""
    from keras_autolr import AutoLR

    backup_dir = tmp_path_factory.mktemp("autolr")
    x, y = support.digits()
    model = support.digits_mlp(hidden=(32,))
    autolr = AutoLR(verbose=0, backup_dir=backup_dir)
    history = model.fit(
        x,
        y,
        batch_size=64,
        epochs=8,
        verbose=0,
        validation_data=(x[:256], y[:256]),
        callbacks=[autolr],
    )
    assert autolr.controller.events, "the run must switch to be plotted"
    return autolr, backup_dir, history.history["val_loss"]


def test_plot_is_exported_lazily():
    assert keras_autolr.plot is plotting.plot


def test_fit_run_renders_a_png_of_the_requested_size(fit_run, tmp_path):
    autolr, *_ = fit_run
    path = tmp_path / "run.png"
    figure = keras_autolr.plot(autolr, path, figsize=(8, 6), dpi=50)
    assert isinstance(figure, Figure)
    assert mpl_image.imread(path).shape == (300, 400, 4)


def test_fit_run_artists(fit_run):
    autolr, *_ = fit_run
    ctl = autolr.controller
    event = ctl.events[-1]
    peak = event["peak_lr"]
    figure = keras_autolr.plot(autolr)
    lr_axes, loss_axes = figure.axes
    assert len(figure.axes) == 2
    assert lr_axes.get_shared_x_axes().joined(lr_axes, loss_axes)
    assert lr_axes.get_yscale() == "log"
    assert loss_axes.get_yscale() == "linear"
    labels = legend_labels(lr_axes) + legend_labels(loss_axes)
    assert any(label.startswith("LR at the loss minimum") for label in labels)
    roll_back = f"from {lr_text(event['lr_before'])} to {lr_text(peak)}"
    assert any(
        label.startswith(f"switch at step {event['step']}: LR ")
        and label.endswith(roll_back)
        for label in labels
    )
    assert "GP posterior mean" in labels
    title = lr_axes.get_title(loc="left")
    assert roll_back in title
    assert f"step {event['step']}" in title
    assert f"to 0 at step {ctl.total_steps}" in title

    # The LR drawn is the controller's, step by step.
    curves = [a for a in lr_axes.get_lines() if a.get_color() == "C0"]
    for curve in curves:
        steps, lrs = curve.get_data()
        np.testing.assert_allclose(lrs, ctl.lr_at(steps), rtol=1e-12)
    drawn = np.concatenate([curve.get_xdata() for curve in curves])
    # Every step of the budget: 8 epochs of 1024 / 64 = 16 steps.
    assert ctl.total_steps == 8 * 16
    np.testing.assert_array_equal(
        np.unique(drawn)[[0, -1]], [0, ctl.total_steps - 1]
    )
    # The minimum marker sits on the ramp where its LR was the minimum's.
    (marker_step,), (marker_lr,) = line(lr_axes, "LR at the loss").get_data()
    assert marker_lr == event["minimum_lr"]
    ramp = schedule.ramp(
        ctl.settings.warmup,
        marker_step,
        ctl.settings.min_lr,
        ctl.settings.max_lr,
        ctl.ramp_steps,
    )
    assert ramp == pytest.approx(marker_lr, rel=1e-6)
    assert marker_step <= event["step"]
    # The roll-back goes from the LR reached to the peak, at the switch.
    back = line(lr_axes, "switch at step")
    np.testing.assert_array_equal(back.get_xdata(), [event["step"]] * 2)
    np.testing.assert_array_equal(
        back.get_ydata(), [event["lr_before"], event["peak_lr"]]
    )
    # The GP covers the warmup, with the switch step as "now".
    gp_steps = line(loss_axes, "GP posterior mean").get_xdata()
    assert gp_steps[0] == 0 and gp_steps[-1] == event["step"]
    # It is the curve the test saw: despiked bins, each with its own noise.
    centers, means, counts = ctl.loss_bins()
    warm = np.isfinite(means) & (centers < event["step"])
    seen, _, variance = detector_inputs(means[warm])
    expected = support.detector_of(ctl).posterior(
        centers[warm] / event["step"], seen, counts[warm], noise=variance
    )
    np.testing.assert_allclose(
        line(loss_axes, "GP posterior mean").get_ydata(),
        expected.mean,
        rtol=1e-12,
    )


def test_saved_state_files_plot_like_the_run(fit_run, tmp_path):
    autolr, backup_dir, _ = fit_run
    small = {"figsize": (6, 5), "dpi": 40}
    expected = keras_autolr.plot(autolr, **small).axes[0].get_title(loc="left")
    (saved,) = [n for n in os.listdir(backup_dir) if n.endswith("08.json")]
    dumped = tmp_path / "state.json"
    dumped.write_text(json.dumps(autolr.controller.get_state()))
    for run in (backup_dir / saved, str(dumped), autolr.controller.get_state()):
        path = tmp_path / "state.png"
        figure = keras_autolr.plot(run, path, **small)
        assert figure.axes[0].get_title(loc="left") == expected
        assert mpl_image.imread(path).shape == (200, 240, 4)


def epoch_axis(ax):
    """The secondary x axis of `ax`, in epochs."""
    (axis,) = ax.child_axes
    return axis


def validation_markers(ax):
    """The steps and values of the validation-loss markers of `ax`."""
    (markers,) = [
        a for a in ax.get_lines() if a.get_label() == "validation loss"
    ]
    return markers.get_data()


def test_fit_run_has_an_epoch_axis_on_top(fit_run, tmp_path):
    autolr, *_ = fit_run
    figure = keras_autolr.plot(autolr, tmp_path / "run.png")
    lr_axes, loss_axes = figure.axes
    epochs = epoch_axis(lr_axes)
    assert epochs.get_xlabel() == "epoch"
    assert loss_axes.child_axes == []
    # 8 epochs of 16 steps; whole epochs are ticked where their first
    # step is on the step axis.
    assert autolr.epoch_log.steps_per_epoch == 16
    np.testing.assert_allclose(epochs.get_xlim(), [0, 8])
    ticks = epochs.get_xticks()
    ticks = ticks[(ticks >= 0) & (ticks <= 8)]
    assert ticks.size >= 3
    np.testing.assert_array_equal(ticks, np.round(ticks))
    ones = np.ones_like(ticks)
    at = epochs.transData.transform(np.column_stack([ticks, ones]))
    steps = lr_axes.transData.transform(np.column_stack([16 * ticks, ones]))
    np.testing.assert_allclose(at[:, 0], steps[:, 0], atol=1e-6)


def test_fit_run_draws_the_validation_losses(fit_run):
    autolr, _, val_loss = fit_run
    recorded = autolr.epoch_log.validation_losses
    # History's val_loss, after each epoch's 16 steps.
    assert recorded == tuple(zip(range(16, 129, 16), val_loss, strict=True))
    loss_axes = keras_autolr.plot(autolr).axes[1]
    steps, values = validation_markers(loss_axes)
    np.testing.assert_array_equal(steps, [step for step, _ in recorded])
    np.testing.assert_array_equal(values, val_loss)
    assert loss_axes.get_ylabel() == "loss"


def test_a_saved_state_plots_the_epochs_and_validation_losses(fit_run):
    autolr, backup_dir, val_loss = fit_run
    figure = keras_autolr.plot(backup_dir / "autolr-epoch-000008.json")
    assert epoch_axis(figure.axes[0]).get_xlabel() == "epoch"
    np.testing.assert_array_equal(
        validation_markers(figure.axes[1]), [np.arange(16, 129, 16), val_loss]
    )
    # The controller's own state knows no epochs.
    figure = keras_autolr.plot(autolr.controller.get_state())
    assert figure.axes[0].child_axes == []
    assert "validation loss" not in legend_labels(figure.axes[1])
    assert figure.axes[1].get_ylabel() == "training loss"


def test_log_loss_puts_the_loss_on_a_log_scale(fit_run, tmp_path):
    autolr, *_ = fit_run
    path = tmp_path / "log.png"
    small = {"figsize": (8, 6), "dpi": 50}
    figure = keras_autolr.plot(autolr, path, log_loss=True, **small)
    lr_axes, loss_axes = figure.axes
    assert loss_axes.get_yscale() == "log"
    assert lr_axes.get_yscale() == "log"
    assert mpl_image.imread(path).shape == (300, 400, 4)
    assert keras_autolr.plot(autolr, **small).axes[1].get_yscale() == "linear"


def test_log_loss_needs_positive_losses():
    ctl = AutoLRController(total_steps=100)
    for step in range(20):
        ctl.step(1.0 - step / 10)  # Down to -0.9.
    match = r"`log_loss=True` needs positive losses, .* loss of -0\.9,"
    with pytest.raises(ValueError, match=match):
        keras_autolr.plot(ctl, log_loss=True)
    assert keras_autolr.plot(ctl).axes[1].get_yscale() == "linear"
    state = {**fed(50).get_state(), "validation_losses": [[40, 0.0]]}
    with pytest.raises(ValueError, match="a loss of 0,"):
        keras_autolr.plot(state, log_loss=True)


def test_run_in_warmup_plots(tmp_path):
    ctl = fed(150)
    assert ctl.phase == "warmup" and ctl.lr_at_minimum is not None
    path = tmp_path / "warmup.png"
    figure = keras_autolr.plot(ctl, path, title="still warming up")
    lr_axes, loss_axes = figure.axes
    assert figure.get_suptitle() == "still warming up"
    title = lr_axes.get_title(loc="left")
    assert "warmup in progress at step 150 of 1000" in title
    assert f"cap (step {ctl.switch_step})" in title
    labels = legend_labels(lr_axes) + legend_labels(loss_axes)
    assert "planned if the cap comes first" in labels
    assert "GP posterior mean" in labels
    assert not any(label.startswith("switch") for label in labels)
    assert line(loss_axes, "GP posterior mean").get_xdata()[-1] == 150
    assert mpl_image.imread(path).shape == (750, 1000, 4)


def test_fresh_controller_plots():
    figure = keras_autolr.plot(AutoLRController(total_steps=100))
    assert "at step 0 of 100" in figure.axes[0].get_title(loc="left")


def test_divergence_marks_the_non_finite_loss():
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        ctl = fed(120, loss_at_nan=100)
    assert ctl.events[-1]["reason"] == "divergence"
    figure = keras_autolr.plot(ctl)
    assert "non-finite loss at step 100" in figure.axes[0].get_title(loc="left")
    (x,), _ = line(figure.axes[1], "non-finite loss").get_data()
    assert x == 100.5  # The center of the bin of step 100.


def test_cap_reached_says_so():
    ctl = AutoLRController(total_steps=100, patience=1000)
    for _ in range(100):
        ctl.step(1.0)
    assert ctl.events[-1]["reason"] == "cap"
    title = keras_autolr.plot(ctl).axes[0].get_title(loc="left")
    assert ctl.ramp_steps == 40  # 0.4 of the budget.
    assert title.startswith("AutoLR: warmup cap reached at step 40")
    assert lr_text(ctl.landing_lr) in title


# The spike comes after the cap: the decay's guard restarts it (warns).
@pytest.mark.filterwarnings("ignore:AutoLR:RuntimeWarning")
@pytest.mark.parametrize("log_loss", [False, True])
def test_an_exploding_loss_does_not_flatten_the_warmup(log_loss):
    ctl = AutoLRController(total_steps=200)
    for step in range(200):
        ctl.step(1e6 if 120 <= step < 125 else 2.0 - step / 200)
    figure = keras_autolr.plot(ctl, log_loss=log_loss)
    low, top = figure.axes[1].get_ylim()
    assert 0 < low < 1.0 and 2.0 < top < 10
    assert "loss above the axis" in legend_labels(figure.axes[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"run": 42}, "Argument `run` must be"),
        ({"run": fed(0), "path": 3}, "Argument `path`"),
        ({"run": fed(0), "title": 3}, "Argument `title`"),
        ({"run": fed(0), "figsize": (8, 0)}, "Argument `figsize`"),
        ({"run": fed(0), "figsize": 8}, "Argument `figsize`"),
        ({"run": fed(0), "dpi": 0}, "Argument `dpi`"),
        ({"run": fed(0), "log_loss": 1}, "Argument `log_loss`"),
        (
            {"run": {**fed(0).get_state(), "validation_losses": [[1, "x"]]}},
            "`validation_losses` must be a list of",
        ),
        ({"run": {"steps": 3}}, "Not an AutoLRController state"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_autolr.plot(**kwargs)


def test_untrained_callback_is_refused():
    from keras_autolr import AutoLR

    with pytest.raises(ValueError, match="has not trained yet"):
        keras_autolr.plot(AutoLR())


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install keras-autolr\[plot\]"):
        keras_autolr.plot(fed(0))
