"""A trainer's numeric flags checked before any work starts: every bad flag named with its value and what is allowed.

A trainer lists its rules once, ``{field: (holds, what is allowed)}``, and calls :func:`check_flags` on its
parsed (preset-resolved) arguments before it reads data or writes its run folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from mocapact_envs.tasks.checks import is_number

#: A field's rule: whether a value holds, and what is allowed (for the error).
FlagRule = tuple[Callable[[Any], bool], str]


def positive(value: Any) -> bool:
    return is_number(value) and 0 < value < math.inf


def non_negative(value: Any) -> bool:
    return is_number(value) and 0 <= value < math.inf


def unset_or_positive(value: Any) -> bool:
    """``None`` (the flag left unset) or a finite number > 0."""
    return value is None or positive(value)


def unit_interval(value: Any) -> bool:
    return is_number(value) and 0 <= value <= 1


def flag(name: str) -> str:
    """A field's command-line flag: ``batch_size`` is ``--batch-size``."""
    return "--" + name.replace("_", "-")


def check_flags(args: Any, rules: Mapping[str, FlagRule]) -> None:
    """Raises ``ValueError`` naming every flag of ``args`` whose value breaks its rule, all in one message."""
    errors = [
        f"{flag(name)} {getattr(args, name)!r}: must be {allowed}"
        for name, (holds, allowed) in rules.items()
        if not holds(getattr(args, name))
    ]
    if errors:
        raise ValueError("; ".join(errors) + ".")
