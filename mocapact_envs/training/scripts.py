"""Pieces every single-file trainer and script of ``baselines/`` shares: presets, seeding, the command line."""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import numpy as np

ArgsT = TypeVar("ArgsT")


def apply_preset(args: ArgsT, preset: Mapping[str, Any]) -> ArgsT:
    """A copy of the ``args`` dataclass with every field left at ``None`` taken from ``preset``.

    Explicit flags win over the preset.
    """
    filled = {name: value for name, value in preset.items() if getattr(args, name) is None}
    return dataclasses.replace(args, **filled)


def flag_value(value: Any) -> str:
    """A value as it is written on the command line (a tuple as its items)."""
    if isinstance(value, tuple | list):
        return " ".join(map(flag_value, value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def show_presets_in_help(tables: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Callable[[type], type]:
    """Class decorator for a trainer's ``Args`` dataclass: ``--help`` shows what each preset sets.

    ``tables`` maps a flag to its choices' values, e.g. ``{"--preset": PRESETS}``. A field that a
    choice sets (its default ``None``) shows ``(default: --preset cpu: 256, mocapact: 1024)``
    instead of ``(default: None)``. Every name the tables set must be a field of the class.
    """
    import tyro

    def decorate(cls: type) -> type:
        fields = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls, include_extras=True)
        hint_parts: dict[str, list[str]] = {}
        for flag, choices in tables.items():
            for name in dict.fromkeys(name for values in choices.values() for name in values):
                if name not in fields:
                    raise ValueError(f"{flag} sets {name!r}, which is no field of {cls.__name__}.")
                values = ", ".join(f"{choice}: {flag_value(v[name])}" for choice, v in choices.items() if name in v)
                hint_parts.setdefault(name, []).append(f"{flag} {values}")
        for name, parts in hint_parts.items():
            hint = f"(default: {'; '.join(parts)})"
            cls.__annotations__[name] = Annotated[hints[name], tyro.conf.arg(help_behavior_hint=hint)]
        return cls

    return decorate


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_cli(main: Callable[[ArgsT], Any], args_class: type[ArgsT]) -> int:
    """Parses ``args_class`` with tyro and runs ``main``: the exit status of a script of ``baselines/``
    (``main``'s when it returns an int, else 0).

    Bad input (a path that does not exist, a value the package refuses: ``FileNotFoundError``,
    ``ValueError``, whose messages name the value) is one line ``error: ...`` on stderr and exit
    status 2, not a traceback. ``MOCAPACT_TRACEBACK=1`` re-raises instead: a ``ValueError`` from a bug
    deep in a run keeps its traceback for whoever debugs it.
    """
    import tyro

    args = tyro.cli(args_class)
    try:
        status = main(args)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        if os.environ.get("MOCAPACT_TRACEBACK") == "1":
            raise
        print(f"error: {error} (MOCAPACT_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0
