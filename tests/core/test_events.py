"""events: the log of a run's decisions."""

import json

from keras_autolr.events import EventLog


def test_the_log_keeps_order_filters_by_kind_and_hands_out_copies():
    log = EventLog()
    assert len(log) == 0 and log.first("switch") is None
    log.add({"step": 10, "event": "switch", "reason": "minimum"})
    log.add({"step": 50, "event": "rescue", "reason": "explosion"})
    log.add({"step": 80, "event": "rescue", "reason": "divergence"})
    assert len(log) == 3
    assert [e["step"] for e in log.all()] == [10, 50, 80]
    assert [e["step"] for e in log.all("rescue")] == [50, 80]
    assert log.first("rescue")["reason"] == "explosion"
    assert log.first("rescue", since=2)["step"] == 80
    assert log.first("switch", since=1) is None
    log.all()[0]["step"] = -1
    log.first("switch")["reason"] = "changed"
    assert log.first("switch") == {
        "step": 10,
        "event": "switch",
        "reason": "minimum",
    }


def test_state_round_trips_through_json():
    log = EventLog()
    log.add({"step": 3, "event": "switch", "peak_lr": 0.01, "loss": None})
    other = EventLog()
    other.set_state(json.loads(json.dumps(log.get_state())))
    assert other.all() == log.all()
