"""The checks of the numbers the environments and tasks take: one rule per kind of value, one message shape.

Each check raises naming the argument, what it must be and the value it got: ``TypeError`` for a value
that is no number at all (a string, a list, a bool), ``ValueError`` for a number out of range (NaN included).
They run once, when an environment is made, never per step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def is_number(value: Any) -> bool:
    """A real number (numpy's too), not a bool: ``True`` is no length or step count."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_integer(value: Any) -> bool:
    """An integer, or a float with an integral value (``10.0``, as JSON or arithmetic may give it)."""
    return is_number(value) and math.isfinite(value) and float(value).is_integer()


def describe(value: Any) -> str:
    """A value of the wrong type as an error shows it: with its type, so ``'0.3'`` reads as the string it is."""
    return f"{value!r} ({type(value).__name__})"


def check_number(name: str, value: Any, rule: str, holds: Callable[[float], bool]) -> float:
    """``value`` as a float when it is a number that ``holds``; else an error saying ``name must be {rule}``."""
    if not is_number(value):
        raise TypeError(f"{name} must be {rule}, got {describe(value)}.")
    if not holds(float(value)):  # NaN fails every comparison, so every rule refuses it
        raise ValueError(f"{name} must be {rule}, got {value!r}.")
    return float(value)


def check_positive(name: str, value: Any, rule: str = "> 0") -> float:
    """A finite number > 0."""
    return check_number(name, value, rule, lambda v: 0 < v < math.inf)


def check_non_negative(name: str, value: Any, rule: str = ">= 0") -> float:
    """A finite number >= 0."""
    return check_number(name, value, rule, lambda v: 0 <= v < math.inf)


def check_integer(name: str, value: Any, minimum: int, rule: str | None = None) -> int:
    """``value`` as an int when it is an integer >= ``minimum``."""
    rule = rule or f"an integer >= {minimum}"
    if not is_number(value):
        raise TypeError(f"{name} must be {rule}, got {describe(value)}.")
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be {rule}, got {value!r}.")
    return int(value)


def check_arena_size(arena_size: Any) -> tuple[float, float]:
    """The floor's (x, y) extent, when it is two finite lengths > 0: NaN or inf would otherwise reach MuJoCo's
    compiler, whose error names only a geom."""
    rule = "two finite lengths > 0 (x, y) in metres"
    if isinstance(arena_size, str) or not isinstance(arena_size, (Sequence, np.ndarray)):
        raise TypeError(f"arena_size must be {rule}, got {describe(arena_size)}.")
    if not all(is_number(size) for size in arena_size):
        raise TypeError(f"arena_size must be {rule}, got {arena_size!r}.")
    if len(arena_size) != 2 or not all(0 < size < math.inf for size in arena_size):
        raise ValueError(f"arena_size must be {rule}, got {arena_size!r}.")
    return float(arena_size[0]), float(arena_size[1])
