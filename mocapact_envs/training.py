"""Pieces every single-file trainer shares: presets and seeding."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import torch

ArgsT = TypeVar("ArgsT")


def apply_preset(args: ArgsT, preset: Mapping[str, Any]) -> ArgsT:
    """A copy of the ``args`` dataclass with every field left at ``None`` taken from ``preset``.

    Explicit flags win over the preset.
    """
    filled = {name: value for name, value in preset.items() if getattr(args, name) is None}
    return dataclasses.replace(args, **filled)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
