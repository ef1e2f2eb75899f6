"""Reference actuation: the action that drives the walker's position servos to the next reference pose.

The CMU humanoid's 56 actuators are position servos: an action in [-1, 1] sets each one's
target angle inside its joint's range. Writing the walker's ``cmu_pose_to_actuation`` of the
reference joints one step ahead therefore asks every joint to go where the clip goes next.
Played open loop from the clip start, these actions keep the humanoid up for 29 to 40
steps on the shared clips (zero actions: 5 to 9), so an expert that learns a correction
around them (``action = reference action + policy output``) starts far closer to tracking
than one that learns absolute actions from zero.

An expert stays a function of its observation: the step index comes from the
``walker/time_in_clip`` observable (``time in snippet / snippet duration``), and the
snippet's table of reference actions is saved with the expert.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: The observable an expert reads its step in the snippet from.
TIME_KEY = "walker/time_in_clip"


@functools.lru_cache(maxsize=1)
def _servo_constants() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The V2020 walker's actuator order, and the offset and scale that map joint angles to actions."""
    from dm_control.locomotion.walkers import cmu_humanoid

    walker = cmu_humanoid.CMUHumanoidPositionControlledV2020()
    return np.asarray(walker.actuator_order), np.asarray(walker._offset), np.asarray(walker._scale)


def pose_to_action(joints: np.ndarray) -> np.ndarray:
    """``cmu_pose_to_actuation`` of joint angles in mocap joint order ``(..., 56)``, clipped to [-1, 1]."""
    order, offset, scale = _servo_constants()
    joints = np.asarray(joints, np.float64)
    return np.clip((2.0 * joints[..., order] - offset) / scale, -1.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ReferenceActions:
    """One snippet's reference actions, looked up by the ``walker/time_in_clip`` observation.

    ``actions[t]`` is the action at step ``t`` of the snippet: the actuation of the
    reference pose at ``t + 1`` (the last step repeats the final pose).
    """

    actions: np.ndarray
    """(num_steps, 56) float32."""

    @classmethod
    def from_joints(cls, joints: np.ndarray) -> ReferenceActions:
        """From the snippet's reference joint angles, one row per step in mocap joint order."""
        joints = np.asarray(joints)
        if joints.ndim != 2 or len(joints) < 2:
            raise ValueError(f"reference joints must be (steps >= 2, joints), got shape {joints.shape}.")
        ahead = np.concatenate([joints[1:], joints[-1:]])
        return cls(pose_to_action(ahead))

    @classmethod
    def for_snippet(cls, clip: str, mocap_path: str | None = None) -> ReferenceActions:
        """For a clip id (``CMU_016_22``) or snippet id (``CMU_016_22-0-82``) of the mocap source."""
        from mocapact_envs.mocap.source import get_source

        clip_set = get_source(mocap_path).clip_set(clip)
        if len(clip_set.snippets) != 1:
            raise ValueError(f"{clip!r} names {len(clip_set.snippets)} snippets; reference actions are per snippet.")
        return cls.from_joints(clip_set.reference_features(0)["joints"])

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    def step_index(self, time_in_clip: np.ndarray) -> np.ndarray:
        """The snippet step of ``time_in_clip`` values (the observable, any shape ``(..., 1)`` or ``(...)``)."""
        time_in_clip = np.asarray(time_in_clip, np.float64)
        steps = np.rint(time_in_clip * (self.num_steps - 1)).astype(np.int64)
        return np.clip(steps, 0, self.num_steps - 1)

    def at(self, time_in_clip: np.ndarray) -> np.ndarray:
        """Reference actions for observed ``time_in_clip``: ``(56,)`` for a scalar or ``(1,)``, ``(B, 56)`` for ``(B, 1)``."""
        index = self.step_index(time_in_clip)
        if index.ndim >= 1 and index.shape[-1] == 1:
            index = index[..., 0]
        return self.actions[index]

    def digest(self) -> str:
        """``sha256:`` of the float32 table: what an expert file keeps to check the table it is given."""
        return "sha256:" + hashlib.sha256(np.ascontiguousarray(self.actions, np.float32).tobytes()).hexdigest()

    @classmethod
    def for_expert(cls, action_offset: Mapping[str, Any], config_path: str | Path | None = None) -> ReferenceActions:
        """The table an expert's ``config.json`` ``action_offset`` names, from the mocap source, checked by digest."""
        from mocapact_envs.mocap.source import get_source

        where = f"{config_path}: " if config_path else ""
        snippet_id = action_offset.get("snippet_id")
        if not snippet_id:
            raise ValueError(
                f"{where}action_offset names no snippet_id; the expert cannot rebuild its reference actions."
            )
        table = cls.for_snippet(snippet_id)
        expected = action_offset.get("digest")
        if expected and table.digest() != expected:
            raise ValueError(
                f"{where}the reference actions of {snippet_id} in {get_source().description} differ from those the "
                f"expert was trained with (digest {table.digest()[:19]}..., expected {expected[:19]}...): the mocap "
                "source holds other motion data for this snippet (another conversion or dm_control's official file). "
                "Point MOCAPACT_MOCAP_PATH at the data the expert was trained on."
            )
        return table
