import json

import pytest

from keras_autolr.core import checkpoint
from keras_autolr.core.controller import AutoLRController


def test_pack_then_unpack_gives_back_each_part():
    config = AutoLRController(total_steps=600).get_config()
    parts = dict(
        record={"a": 1}, plan=[2], warmup=None, check_mark=7, events=[]
    )
    state = json.loads(json.dumps(checkpoint.pack(config, **parts)))
    assert state["format"] == checkpoint.FORMAT
    assert checkpoint.config_of(state) == config
    assert checkpoint.unpack(state, config) == parts


def test_a_state_of_other_settings_is_refused_naming_each_difference():
    state = AutoLRController(total_steps=600, patience=5).get_state()
    other = AutoLRController(total_steps=700, patience=4).get_config()
    with pytest.raises(ValueError) as info:
        checkpoint.unpack(state, other)
    text = str(info.value)
    assert "'total_steps': (700, 600)" in text
    assert "'patience': (4, 5)" in text
    assert "'min_lr'" not in text


def test_set_state_refuses_another_configuration():
    state = AutoLRController(total_steps=600).get_state()
    with pytest.raises(ValueError, match="total_steps"):
        AutoLRController(total_steps=700).set_state(state)
    with pytest.raises(ValueError, match="format 3"):
        AutoLRController(total_steps=600).set_state({"steps": 3})
    with pytest.raises(ValueError, match="format 3"):
        AutoLRController(total_steps=600).set_state({**state, "format": 2})


def test_from_state_refuses_what_get_state_did_not_make():
    with pytest.raises(ValueError, match="get_state"):
        AutoLRController.from_state([1, 2])
    with pytest.raises(ValueError, match="get_state"):
        AutoLRController.from_state({"format": 3})
