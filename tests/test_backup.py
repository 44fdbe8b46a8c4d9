import json
import os

import pytest

from keras_autolr import backup
from keras_autolr.backup import StateStore


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

    def torn_dump(obj, f):  # Writes half the file, then the process "dies".
        text = json.dumps(obj)
        f.write(text[: len(text) // 2])
        f.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(backup.json, "dump", torn_dump)
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
    StateStore(tmp_path)  # The next run's store cleans up.
    assert os.listdir(tmp_path) == ["autolr-epoch-000004.json"]
