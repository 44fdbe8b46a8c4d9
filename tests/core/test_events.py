"""events: the log of a run's decisions, and the Report of an update."""

import dataclasses
import json

import pytest

from keras_autolr.core.events import DECAY, WARMUP, EventLog, Report


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


def test_a_report_is_a_frozen_value():
    report = Report(lr=0.1, steps=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.lr = 0.2
    assert report == Report(lr=0.1, steps=5) != Report(lr=0.1, steps=6)
    # The defaults: an update that decided nothing, before any test.
    assert (report.tested, report.switch, report.rescue) == (False, None, None)
    assert (report.phase, report.probability, report.last_lr) == (
        WARMUP,
        None,
        None,
    )
    # Not made by a controller: no record to judge the loss by.
    assert report.at_lowest_loss is False
    assert DECAY == "decay"
