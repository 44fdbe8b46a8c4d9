import hashlib
import os

import numpy as np
import pytest

from keras_autolr.keras import backup
from keras_autolr.keras.backup import StateStore


def test_save_load_and_keep_the_newest(tmp_path):
    store = StateStore(tmp_path / "autolr", keep=3)
    for epoch in range(1, 6):
        store.save(epoch, {"steps": 10 * epoch})
    assert store.epochs() == [3, 4, 5]
    assert store.load(5) == {"steps": 50}
    assert store.load(2) is None
    assert sorted(os.listdir(tmp_path / "autolr")) == [
        "autolr-epoch-000003.json",
        "autolr-epoch-000004.json",
        "autolr-epoch-000005.json",
    ]


def test_a_crash_during_a_save_keeps_the_previous_state(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    store.save(1, {"steps": 10, "bins": list(range(100))})

    real_fsync = backup.os.fsync

    def torn_fsync(fd):  # Half the file written, then the process "dies".
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        real_fsync(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(backup.os, "fsync", torn_fsync)
    with pytest.raises(KeyboardInterrupt):
        store.save(2, {"steps": 20, "bins": list(range(100))})
    with pytest.raises(KeyboardInterrupt):
        store.save(1, {"steps": 99})  # Overwriting the good one fails too.
    monkeypatch.undo()
    assert store.epochs() == [1]
    assert store.load(1) == {"steps": 10, "bins": list(range(100))}
    assert os.listdir(tmp_path) == ["autolr-epoch-000001.json"]


def test_bad_keep(tmp_path):
    with pytest.raises(ValueError, match="keep=0"):
        StateStore(tmp_path, keep=0)


def test_leftovers_of_a_killed_save_are_ignored_then_removed(tmp_path):
    store = StateStore(tmp_path)
    store.save(4, {"steps": 40})
    (tmp_path / ".autolr-abc123.tmp").write_text('{"steps": 5')  # Torn.
    assert store.epochs() == [4]
    StateStore(tmp_path).ensure()  # The next run's store cleans up.
    assert os.listdir(tmp_path) == ["autolr-epoch-000004.json"]


def test_weight_copies_round_trip_bit_for_bit(tmp_path):
    store = StateStore(tmp_path)
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(3, 4)).astype("float32") for _ in range(12)]
    arrays.append(np.float64(2.5) * np.ones(()))  # A scalar slot.
    record = store.save_weights(48, arrays)
    with open(store.weights_path(48), "rb") as f:
        data = f.read()
    assert record == {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    loaded = store.load_weights(48, record)
    assert len(loaded) == len(arrays)
    for a, b in zip(loaded, arrays, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert store.weight_steps() == [48]
    with pytest.raises(backup.BackupError, match="is missing"):
        store.load_weights(7)
    # A copy is written once per step: the first one stays.
    assert store.save_weights(48, [np.zeros(1)]) == record
    assert len(store.load_weights(48, record)) == len(arrays)


def test_copies_no_kept_state_names_are_deleted(tmp_path):
    store = StateStore(tmp_path, keep=2)
    # As the callback does: the copies, then the state that names them.
    store.save_weights(10, [np.full(2, 10)])
    store.save(1, {"steps": 10, backup.WEIGHT_STEPS: [10, None]})
    store.save_weights(20, [np.full(2, 20)])
    store.save(2, {"steps": 20, backup.WEIGHT_STEPS: [10, 20]})
    assert store.weight_steps() == [10, 20]
    store.save_weights(30, [np.full(2, 30)])
    store.save(3, {"steps": 30, backup.WEIGHT_STEPS: [20, 30]})
    assert store.epochs() == [2, 3]
    assert store.weight_steps() == [10, 20, 30]
    store.save(4, {"steps": 40, backup.WEIGHT_STEPS: [30, None]})
    assert store.weight_steps() == [20, 30]
    np.testing.assert_array_equal(store.load_weights(30), [np.full(2, 30)])
    # A copy no state names yet (a run killed between the two writes) goes
    # at the next save; so do those of states without copies
    # (restore_weights=False, or a state of an older version).
    store.save_weights(50, [np.full(2, 50)])
    store.save(5, {"steps": 50})
    store.save(6, {"steps": 60})
    assert store.weight_steps() == []


def test_a_save_reads_back_only_states_it_has_not_seen(tmp_path, monkeypatch):
    store = StateStore(tmp_path, keep=2)
    store.save_weights(10, [np.zeros(2)])
    store.save(1, {"steps": 10, backup.WEIGHT_STEPS: [10, None]})
    reads = []
    original = StateStore.load

    def counted(self, epochs_done):
        reads.append(epochs_done)
        return original(self, epochs_done)

    monkeypatch.setattr(StateStore, "load", counted)
    store.save(2, {"steps": 20, backup.WEIGHT_STEPS: [10, None]})
    store.save(3, {"steps": 30})
    assert reads == []  # It wrote every state it keeps.
    assert store.weight_steps() == [10]  # Still named by the state of 2.
    # A restarted run's store reads each kept state once.
    restarted = StateStore(tmp_path, keep=2)
    restarted.save(4, {"steps": 40})
    restarted.save(5, {"steps": 50})
    assert reads == [3]
    assert restarted.weight_steps() == []


def test_a_crash_while_writing_a_copy_leaves_no_file(tmp_path, monkeypatch):
    store = StateStore(tmp_path)

    def torn_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(backup.np, "savez", torn_savez)
    with pytest.raises(KeyboardInterrupt):
        store.save_weights(5, [np.ones(3)])
    monkeypatch.undo()
    assert not os.path.exists(tmp_path) or os.listdir(tmp_path) == []
    with pytest.raises(backup.BackupError, match="is missing"):
        store.load_weights(5)


def test_clear_deletes_states_and_copies_only(tmp_path):
    store = StateStore(tmp_path)
    store.save_weights(5, [np.ones(2)])
    store.save(1, {"steps": 5, backup.WEIGHT_STEPS: [5, None]})
    (tmp_path / "model.keras").write_text("not ours")
    store.clear()
    assert store.epochs() == [] and store.weight_steps() == []
    assert os.listdir(tmp_path) == ["model.keras"]
