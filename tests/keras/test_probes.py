"""The probes of the landing LR in a real `fit`: the weights each starts
from, the LR each step runs at, and a resume in the middle of a probe."""

import keras
import numpy as np
import pytest
import support

from keras_autolr import AutoLR

EPOCHS = 60  # 16 steps each: 960 steps, probes of 20 + 10 steps.
FIT = dict(batch_size=64, shuffle=False, verbose=0)


class Recorder(keras.callbacks.Callback):
    """The LR of each step as the optimizer evaluates it, and the weights
    at each step's end."""

    def __init__(self):
        super().__init__()
        self.lrs, self.weights, self.steps = {}, {}, 0

    def on_train_batch_begin(self, batch, logs=None):
        lr = self.model.optimizer.learning_rate
        self.lrs[self.steps] = float(keras.ops.convert_to_numpy(lr))

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.weights[self.steps] = [
            support.value(self.model, v) for v in self.model.weights
        ]


def probe_events(autolr):
    return [e for e in autolr.controller.events if e["event"] == "probe"]


@pytest.fixture(scope="module")
def probed():
    x, y = support.digits()
    keras.utils.set_random_seed(0)
    model = support.digits_mlp(hidden=(32,))
    before, after = Recorder(), Recorder()
    autolr = AutoLR(epochs=EPOCHS, verbose=0, probes=4)
    model.fit(x, y, epochs=EPOCHS, callbacks=[before, autolr, after], **FIT)
    return model, autolr, before, after


def test_every_probe_starts_from_the_weights_put_back_at_the_switch(probed):
    _, autolr, before, after = probed
    switch = autolr.controller.switch_event
    found = probe_events(autolr)
    assert len(found) == len(switch["probe_lrs"]) == 4
    assert switch["probe_steps"] == [20, 10]
    base = after.weights[switch["step"]]
    for event in found:
        if event["then"] == "next":
            for a, b in zip(after.weights[event["step"]], base, strict=True):
                np.testing.assert_array_equal(a, b)
    # The weights the decay starts from: the chosen probe's at its end.
    chosen = [e for e in found if e["chosen"]][-1]
    end = found[-1]["step"]
    for a, b in zip(
        after.weights[end], before.weights[chosen["step"]], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert autolr.controller.landing_lr == chosen["lr"]


def test_each_step_runs_at_the_controllers_lr_probes_included(probed):
    _, autolr, before, _ = probed
    ctl = autolr.controller
    steps = np.arange(ctl.total_steps)
    applied = np.array([before.lrs[s] for s in steps])
    np.testing.assert_allclose(applied, ctl.lr_at(steps), rtol=1e-5)
    hold, anneal = ctl.switch_event["probe_steps"]
    for event in probe_events(autolr):
        held = before.lrs[event["step"] - anneal - 1]
        assert held == pytest.approx(event["lr"], rel=1e-6)
        last = before.lrs[event["step"] - 1]
        assert last == pytest.approx(event["lr"] / anneal, rel=1e-5)


def test_a_run_resumed_inside_a_probe_makes_the_same_decisions(
    probed, tmp_path
):
    model, whole, _, _ = probed
    switch = whole.controller.switch_event["step"]
    end = probe_events(whole)[-1]["step"]
    # The first epoch end inside the probes, not at a probe's end.
    inside = [
        e
        for e in range(1, EPOCHS)
        if switch < 16 * e < end
        and all(16 * e != p["step"] for p in probe_events(whole))
    ]
    stop = inside[0]
    x, y = support.digits()
    keras.utils.set_random_seed(0)
    first = support.digits_mlp(hidden=(32,))
    ckpt = str(tmp_path / "model.keras")
    backup = tmp_path / "autolr"
    first.fit(
        x,
        y,
        epochs=stop,
        callbacks=[
            AutoLR(epochs=EPOCHS, verbose=0, probes=4, backup_dir=backup),
            keras.callbacks.ModelCheckpoint(ckpt),
        ],
        **FIT,
    )
    resumed = keras.models.load_model(ckpt)
    second = AutoLR(epochs=EPOCHS, verbose=0, probes=4, backup_dir=backup)
    resumed.fit(
        x, y, initial_epoch=stop, epochs=EPOCHS, callbacks=[second], **FIT
    )
    assert second.controller.events == whole.controller.events
    for a, b in zip(resumed.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_probes_without_restore_weights_are_refused():
    with pytest.raises(ValueError, match="`probes` needs `restore_weights"):
        AutoLR(epochs=3, probes=4, restore_weights=False)
