"""Damaged, foreign or unwritable `backup_dir` files: a `BackupError` that
names the file and says what to do, with the model, optimizer and schedule
untouched; a write that fails is a warning, and training goes on.

A run writes its backup over 3 epochs of a 6-epoch budget; a fresh model
then resumes it with `fit(initial_epoch=3, epochs=6)`.
"""

import errno
import glob
import json
import os
import warnings

import numpy as np
import pytest
import support

from keras_autolr import AdamP, AutoLR, AutoLRController
from keras_autolr.keras import backup
from keras_autolr.keras.backup import BackupError, StateStore

EPOCHS = 6
BATCH = 64


def fit(model, backup_dir, initial_epoch=0, epochs=3, callbacks=()):
    x, y = support.digits()
    autolr = AutoLR(epochs=EPOCHS, verbose=0, backup_dir=backup_dir)
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[autolr, *callbacks],
    )
    return autolr


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The files of the first 3 epochs, written once."""
    directory = tmp_path_factory.mktemp("autolr")
    fit(support.digits_mlp(), str(directory))
    return directory


@pytest.fixture
def run_dir(written, tmp_path):
    """A fresh copy of the written files, to damage."""
    directory = tmp_path / "autolr"
    directory.mkdir()
    for path in written.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    return directory


def resume_fails(run_dir, model=None, match=""):
    """Resumes at epoch 3 and returns the `BackupError`; checks that the
    model's and optimizer's weights are those it had before."""
    model = model or support.digits_mlp(seed=1)
    # Build the optimizer's variables, as a restored checkpoint would have.
    model.optimizer.build(model.trainable_variables)
    before = [v.numpy().copy() for v in model.weights]
    before += [v.numpy().copy() for v in model.optimizer.variables]
    with pytest.raises(BackupError, match=match) as info:
        fit(model, str(run_dir), initial_epoch=3, epochs=EPOCHS)
    after = [v.numpy() for v in model.weights]
    after += [v.numpy() for v in model.optimizer.variables]
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    message = str(info.value)
    assert "fitting from epoch 0" in message
    return message


def newest_state(run_dir):
    return run_dir / "autolr-epoch-000003.json"


def copies(run_dir):
    state = json.loads(newest_state(run_dir).read_text())
    steps = [s for s in state[backup.WEIGHT_STEPS] if s is not None]
    assert steps, "the run kept no weight copy to damage"
    return [run_dir / f"autolr-weights-{s:09d}.npz" for s in steps]


def test_an_intact_backup_resumes(run_dir):
    autolr = fit(
        support.digits_mlp(seed=1), str(run_dir), initial_epoch=3, epochs=6
    )
    assert autolr.controller.steps == EPOCHS * 16


def test_truncated_state(run_dir):
    path = newest_state(run_dir)
    path.write_bytes(path.read_bytes()[:50])
    message = resume_fails(run_dir, match="not complete JSON")
    assert str(path) in message


def test_state_that_is_not_utf8(run_dir):
    path = newest_state(run_dir)
    path.write_bytes(b"\xff\xfe" + path.read_bytes()[2:])
    message = resume_fails(run_dir, match="not UTF-8")
    assert str(path) in message


def test_state_that_is_not_an_object(run_dir):
    newest_state(run_dir).write_text("[1, 2, 3]")
    resume_fails(run_dir, match="not an AutoLR state")


def test_state_with_a_damaged_part(run_dir):
    path = newest_state(run_dir)
    state = json.loads(path.read_text())
    state["record"]["bin_sums"] = "broken"
    path.write_text(json.dumps(state))
    message = resume_fails(run_dir, match="cannot use")
    assert "damaged" in message and str(path) in message


def test_truncated_weight_copies(run_dir):
    for path in copies(run_dir):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = resume_fails(run_dir, match="bytes where the state")
    assert "autolr-weights-" in message


def test_missing_weight_copy(run_dir):
    path = copies(run_dir)[-1]
    path.unlink()
    message = resume_fails(run_dir, match="is missing")
    assert str(path) in message


def test_weight_copy_with_another_checksum(run_dir):
    path = copies(run_dir)[-1]
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # Same size, one byte changed.
    path.write_bytes(bytes(data))
    message = resume_fails(run_dir, match="checksum")
    assert str(path) in message


def test_weight_copy_that_is_not_a_zip_without_a_record(run_dir):
    # A state of a release without checksums: the copy is still read.
    path = newest_state(run_dir)
    state = json.loads(path.read_text())
    del state[backup.WEIGHT_FILES]
    path.write_text(json.dumps(state))
    copy = copies(run_dir)[-1]
    copy.write_bytes(b"not a zip file")
    resume_fails(run_dir, match="not a readable weight copy")


def test_another_models_backup(run_dir):
    message = resume_fails(
        run_dir, model=support.digits_mlp(hidden=(32,)), match="another model"
    )
    assert "(64, 32)" in message and "(64, 64)" in message


def test_another_optimizers_backup(run_dir):
    model = support.digits_mlp(optimizer=AdamP(), seed=1)
    message = resume_fails(run_dir, model=model, match="optimizer")
    assert "Adam" in message and "AdamP" in message


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_warns_and_training_goes_on(tmp_path, monkeypatch, code):
    directory = tmp_path / "autolr"
    real_write = StateStore._write

    def write(self, path, data):
        name = os.path.basename(path)
        if name in ("autolr-epoch-000002.json", "autolr-epoch-000003.json"):
            raise OSError(code, os.strerror(code), path)
        real_write(self, path, data)

    monkeypatch.setattr(StateStore, "_write", write)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        autolr = fit(support.digits_mlp(), str(directory), epochs=4)
    texts = [str(w.message) for w in caught if "backup_dir" in str(w.message)]
    assert len(texts) == 2  # Epochs 2 and 3, one warning each.
    assert all(str(directory) in t and os.strerror(code) in t for t in texts)
    assert autolr.controller.steps == 4 * 16  # Training went on.
    # The states of epochs 1 and 4 were written; 4 resumes.
    assert StateStore(str(directory)).epochs() == [1, 4]
    monkeypatch.setattr(StateStore, "_write", real_write)
    resumed = fit(
        support.digits_mlp(seed=1),
        str(directory),
        initial_epoch=4,
        epochs=EPOCHS,
    )
    assert resumed.controller.steps == EPOCHS * 16


def test_a_backup_dir_that_cannot_be_created_warns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    directory = blocker / "autolr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        autolr = fit(support.digits_mlp(), str(directory), epochs=2)
    texts = [str(w.message) for w in caught if "backup_dir" in str(w.message)]
    # At fit start, and at each epoch end.
    assert len(texts) == 3
    assert all(str(directory) in t for t in texts)
    assert autolr.controller.steps == 2 * 16


def test_a_stray_temporary_file_is_removed(run_dir):
    stray = run_dir / ".autolr-killed.tmp"
    stray.write_bytes(b"half a file")
    fit(support.digits_mlp(seed=1), str(run_dir), initial_epoch=3, epochs=4)
    assert not stray.exists()
    assert not glob.glob(str(run_dir / ".autolr-*.tmp"))


class TestControllerFromState:
    """`AutoLRController.from_state` on damaged or foreign JSON."""

    def state(self):
        ctl = AutoLRController(total_steps=400)
        for i in range(100):
            ctl.step(2.0 - 0.01 * i + 0.002 * (i % 3))
        return json.loads(json.dumps(ctl.get_state()))

    @pytest.mark.parametrize(
        "damage, match",
        [
            (lambda s: s.pop("record"), "lacks \\['record'\\]"),
            (lambda s: s["plan"].pop("switch_step"), "damaged"),
            (lambda s: s["record"].update(steps="x"), "damaged"),
            (lambda s: s["events"].append(7), "damaged"),
            (lambda s: s["config"].update(colour=1), "unknown"),
            (lambda s: s["config"].update(min_lr=-1.0), "damaged"),
            (lambda s: s.update(format=99), "format"),
        ],
    )
    def test_damaged(self, damage, match):
        state = self.state()
        damage(state)
        with pytest.raises(ValueError, match=match):
            AutoLRController.from_state(state)

    def test_not_a_state(self):
        for value in ([1, 2], "text", {"steps": 3}):
            with pytest.raises(ValueError, match="Not an AutoLRController"):
                AutoLRController.from_state(value)

    def test_a_failed_set_state_changes_nothing(self):
        state = self.state()
        ctl = AutoLRController(total_steps=400)
        for _ in range(10):
            ctl.step(2.0)
        before = ctl.get_state()
        state["warmup"] = {"minimum_lr": None}
        with pytest.raises(ValueError, match="damaged"):
            ctl.set_state(state)
        assert ctl.get_state() == before


def test_backup_error_is_a_value_error():
    assert issubclass(BackupError, ValueError)
