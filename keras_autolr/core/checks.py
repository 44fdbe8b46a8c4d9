"""Argument checks shared by every public class, with Keras's wording.

Each check raises `ValueError("Argument `name` must be .... Received:
name=value")`, naming the argument and echoing what it received.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_int(name: str, value: Any, minimum: int) -> None:
    """An integer (not a bool) `>= minimum`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < minimum
    ):
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def check_optional_int(name: str, value: Any) -> None:
    """`None`, or an integer `>= 1`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer or None. "
            f"Received: {name}={value!r}"
        )


def check_float(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A finite real number (not a bool) in the interval from `low` to
    `high`, each end closed unless `low_open` / `high_open`."""
    ok = isinstance(value, int | float | np.integer | np.floating)
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        bounds = (
            f"{'(' if low_open else '['}{low}, "
            f"{high}{')' if high_open or math.isinf(high) else ']'}"
        )
        raise ValueError(
            f"Argument `{name}` must be a finite number in {bounds}. "
            f"Received: {name}={value!r}"
        )


def check_multiple(name: str, value: int, of: str, base: int) -> None:
    """`value` is a multiple of `base`, the value of argument `of`."""
    if value % base:
        raise ValueError(
            f"Argument `{name}` must be a multiple of `{of}`. "
            f"Received: {name}={value}, {of}={base}"
        )


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """One of `choices`."""
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {choices}. "
            f"Received: {name}={value!r}"
        )


def check_bool(name: str, value: Any) -> None:
    """`True` or `False`, not a truthy stand-in."""
    if not isinstance(value, bool):
        raise ValueError(
            f"Argument `{name}` must be True or False. "
            f"Received: {name}={value!r}"
        )
