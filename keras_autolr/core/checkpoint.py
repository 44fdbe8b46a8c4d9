"""A controller's checkpoint: one JSON-compatible dict, and its checks.

`AutoLRController.get_state()` packs the state of each of its parts (the
loss record, the decisions, the warmup tests, the test mark and the event
log)
with the configuration that made them; `set_state()` unpacks it only for a
controller of the same configuration, so a resumed run makes the decisions
the uninterrupted one would have made.
"""

from __future__ import annotations

from typing import Any

from keras_autolr.core.options import OPTION_NAMES

FORMAT = 3
PARTS = ("record", "plan", "warmup", "check_mark", "events")


def pack(
    config: dict[str, Any],
    *,
    record: Any,
    plan: Any,
    warmup: Any,
    check_mark: int,
    events: Any,
) -> dict[str, Any]:
    """The state of a controller of `config`, made of its parts' states."""
    return {
        "format": FORMAT,
        "config": config,
        "record": record,
        "plan": plan,
        "warmup": warmup,
        "check_mark": check_mark,
        "events": events,
    }


def config_of(state: Any) -> dict[str, Any]:
    """The configuration a state was saved with.

    Raises:
        ValueError: `state` is not a dict from `get_state()`.
    """
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(
            "Not an AutoLRController state: expected a dict from "
            f"get_state(). Received: {type(state).__name__}"
        )
    config = state["config"]
    names = {"total_steps", *OPTION_NAMES}
    if not isinstance(config, dict) or not set(config) <= names:
        unknown = (
            sorted(set(config) - names) if isinstance(config, dict) else config
        )
        raise ValueError(
            "Not an AutoLRController state: its `config` is not the "
            f"options of a controller (unknown: {unknown!r})."
        )
    return config


def unpack(state: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The parts of `state`, checked against this controller's `config`.

    Raises:
        ValueError: the state is of another format, or was saved with
            other settings (the message lists each that differs).
    """
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(
            f"Not an AutoLRController state of format {FORMAT}. Received "
            f"keys: {sorted(state) if isinstance(state, dict) else state!r}"
        )
    if state["config"] != config:
        diff = {
            k: (v, state["config"].get(k))
            for k, v in config.items()
            if state["config"].get(k) != v
        }
        raise ValueError(
            "The saved AutoLR state was made with other settings "
            f"(this run's value, saved value): {diff}. Resume with the "
            "settings of the saved run, or start without the state."
        )
    missing = [name for name in PARTS if name not in state]
    if missing:
        raise ValueError(
            f"The AutoLR state is damaged: it lacks {missing}. Resume from "
            "an intact state, or start a new schedule."
        )
    return {name: state[name] for name in PARTS}


def damaged(error: Exception) -> ValueError:
    """The error for a state whose parts could not be read back."""
    return ValueError(
        "The AutoLR state is damaged: a part of it could not be read back "
        f"({type(error).__name__}: {error}). Resume from an intact state, "
        "or start a new schedule."
    )
