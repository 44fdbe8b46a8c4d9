"""The validation losses and steps per epoch that AutoLR records, saves in
`backup_dir` and reads back on resume."""

import json
import math

import pytest
import support

from keras_autolr import AutoLR
from keras_autolr.keras.backup import BackupError
from keras_autolr.keras.epoch_log import EpochLog

# 16 steps per epoch; a budget this short is warned about.
pytestmark = pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")


def test_only_epoch_ends_with_a_validation_loss_are_recorded():
    log = EpochLog(steps_per_epoch=10)
    log.add(10, {"loss": 1.0, "val_loss": 0.5})
    log.add(20, {"loss": 0.9})
    log.add(30, None)
    log.add(40, {"val_loss": math.inf})
    assert log.validation_losses == ((10, 0.5), (40, math.inf))
    with pytest.raises(AttributeError):
        log.validation_losses[0].append(1)  # Read-only: a tuple.


def test_state_round_trip_through_json():
    log = EpochLog(7, ((7, 0.25), (14, math.nan)))
    state = json.loads(json.dumps(log.get_state(), allow_nan=False))
    assert state == {
        "steps_per_epoch": 7,
        "validation_losses": [[7, 0.25], [14, None]],
    }
    back = EpochLog.from_state(state)
    assert back.steps_per_epoch == 7
    assert back.validation_losses[0] == (7, 0.25)
    assert math.isnan(back.validation_losses[1][1])


def test_a_state_without_a_log_gives_an_empty_one():
    log = EpochLog.from_state({"config": {}, "record": {}})
    assert log.steps_per_epoch is None and log.validation_losses == ()


@pytest.mark.parametrize(
    "state, match",
    [
        ({"steps_per_epoch": 0}, "`steps_per_epoch` must be a positive"),
        ({"steps_per_epoch": 1.5}, "`steps_per_epoch` must be a positive"),
        ({"validation_losses": {"1": 2}}, "`validation_losses` must be"),
        ({"validation_losses": [[1, 2, 3]]}, "`validation_losses` must be"),
        ({"validation_losses": [[1.0, 2.0]]}, "`validation_losses` must be"),
        ({"validation_losses": [[1, "2"]]}, "`validation_losses` must be"),
    ],
)
def test_a_damaged_state_is_refused(state, match):
    with pytest.raises(ValueError, match=match):
        EpochLog.from_state(state)


def fit(model, autolr, initial_epoch=0, epochs=4, validation=True):
    x, y = support.digits(512)  # 16 steps of 32 per epoch.
    return model.fit(
        x,
        y,
        batch_size=32,
        initial_epoch=initial_epoch,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        validation_data=(x[:128], y[:128]) if validation else None,
        callbacks=[autolr],
    ).history


def test_the_callback_records_the_validation_loss_of_each_epoch():
    autolr = AutoLR(verbose=0)
    history = fit(support.digits_mlp(hidden=()), autolr, epochs=3)
    assert autolr.epoch_log.steps_per_epoch == 16
    assert autolr.epoch_log.validation_losses == tuple(
        zip((16, 32, 48), history["val_loss"], strict=True)
    )
    # A fit from epoch 0 starts a new record, here without validation.
    with pytest.warns(RuntimeWarning, match="starts a new schedule"):
        fit(support.digits_mlp(hidden=()), autolr, epochs=3, validation=False)
    assert autolr.epoch_log.validation_losses == ()


def test_a_resumed_run_keeps_the_validation_losses(tmp_path):
    first = AutoLR(epochs=4, verbose=0, backup_dir=tmp_path)
    model = support.digits_mlp(hidden=())
    before = fit(model, first, epochs=2)["val_loss"]
    # A new callback, as in a new process, resumes from the saved state.
    second = AutoLR(epochs=4, verbose=0, backup_dir=tmp_path)
    after = fit(model, second, initial_epoch=2)["val_loss"]
    assert second.epoch_log.validation_losses == tuple(
        zip((16, 32, 48, 64), before + after, strict=True)
    )
    saved = json.loads((tmp_path / "autolr-epoch-000004.json").read_text())
    assert saved["steps_per_epoch"] == 16
    assert saved["validation_losses"] == [
        list(pair) for pair in second.epoch_log.validation_losses
    ]


def test_a_damaged_validation_record_is_a_backup_error(tmp_path):
    model = support.digits_mlp(hidden=())
    fit(model, AutoLR(epochs=4, verbose=0, backup_dir=tmp_path), epochs=2)
    path = tmp_path / "autolr-epoch-000002.json"
    state = json.loads(path.read_text())
    state["validation_losses"] = [[16, "high"]]
    path.write_text(json.dumps(state))
    second = AutoLR(epochs=4, verbose=0, backup_dir=tmp_path)
    with pytest.raises(BackupError, match="validation_losses") as info:
        fit(model, second, initial_epoch=2)
    assert str(path) in str(info.value)
    assert second.epoch_log.validation_losses == ()
