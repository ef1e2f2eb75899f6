"""Training-only terms added to the tracking reward; evaluations keep MoCapAct's ``comic`` reward.

On long snippets an expert's episodes end where its root's tilt error has grown (``baselines/ppo_expert/drift.py``:
from about 9 degrees after the reset to 30 or more before the fall), a drift the ``comic`` reward weighs little
until the walker is down. ``--upright-reward-weight`` of ``baselines/ppo_expert/train.py`` adds
``weight * (cos(tilt error) - 1)`` to each training step: nothing while the root is as upright as the reference's,
``-weight / 2`` at 60 degrees.
"""

from __future__ import annotations

import numpy as np

from mocapact_envs.evaluation.root_orientation import heading_and_tilt
from mocapact_envs.mocap.ids import Snippet
from mocapact_envs.policies.relay import clip_steps_at


class UprightShaping:
    """``reward + weight * (cos(tilt error) - 1)`` for the worlds of one snippet's vector env.

    Args:
        snippet: the snippet the envs track.
        reference_quaternions: the snippet's reference root quaternions, one row per step.
        weight: the term's weight (>= 0).
    """

    def __init__(self, snippet: Snippet, reference_quaternions: np.ndarray, weight: float):
        if not weight >= 0:
            raise ValueError(f"the upright reward weight must be >= 0, got {weight}.")
        self.snippet, self.reference = snippet, np.asarray(reference_quaternions, np.float64)
        self.last_step = len(self.reference) - 1
        self.weight = float(weight)

    def __call__(self, reward: np.ndarray, info: dict) -> np.ndarray:
        """The shaped reward of one vector-env step (``info``: its ``physics_state`` and ``time_in_clip``)."""
        steps = np.clip(clip_steps_at(self.snippet, info["time_in_clip"]) - self.snippet.start, 0, self.last_step)
        _, tilt = heading_and_tilt(np.asarray(info["physics_state"])[:, 3:7], self.reference[steps])
        return reward + self.weight * (np.cos(tilt) - 1.0)
