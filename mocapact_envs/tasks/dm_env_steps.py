"""dm_env's observations and time steps as Gymnasium's, for the dm_control adapter (``envs/``) and the
dm_control tracking backend (``tasks/composer_tracking.py``), which both step dm_control environments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def flat_observation(observation: Mapping[str, Any], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """A dm_control observation as Gymnasium's: each of ``keys`` a flat float32 array."""
    return {key: np.asarray(observation[key], dtype=np.float32).reshape(-1) for key in keys}


def episode_end_flags(timestep) -> tuple[bool, bool]:
    """Gymnasium's ``terminated`` and ``truncated`` of a ``dm_env.TimeStep``: dm_control's discount 0 at the last
    step is ``terminated``; another last step is ``truncated``."""
    terminated = bool(timestep.last() and timestep.discount == 0.0)
    return terminated, bool(timestep.last() and not terminated)
