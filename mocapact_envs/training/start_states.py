"""Training episodes that start elsewhere than dm_control's reset: where an expert's own episodes drift, or on the
reference with the servos already driving it.

**Own states.**
An expert trained from random starts on the reference meets the states it drifts into only as far as its
episodes last; on a long snippet they end about 50 steps after any start, so the states of the
episodes' later steps, where it must recover, are the ones it has learnt least. ``--own-start-probability``
of ``baselines/ppo_expert/train.py`` starts that share of the random-start episodes at one of these
states instead (the fast vector env's ``set_start_states``), so each one carries on from there.

**Driven reference states.** dm_control's reset sets the walker's pose and velocities to the reference but its
actuator activations to zero: the position servos, whose activations follow their controls with a 0.03 s time
constant (one control step), pull every joint toward the middle of its range for the first step. On
``CMU_009_12`` the root turns 0.135 rad off the reference in that step (0.027 rad with the activations at the
reference pose's actuation). MoCapAct's training and evaluation both start that way;
``--start-activations reference`` starts the training episodes with driven servos instead, to measure what that
first step costs (evaluations keep dm_control's reset).
"""

from __future__ import annotations

import numpy as np

from mocapact_envs.mocap.ids import Snippet
from mocapact_envs.policies.relay import clip_steps_at, snippet_steps
from mocapact_envs.tasks.reference_actions import pose_to_action


def driven_reference_states(reference: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every step but the last of a snippet's reference features (``reference_features``) as a physics state
    (``qpos, qvel, act``) with the activations at the pose's actuation: (steps, states) for ``set_start_states``."""
    steps = len(reference["joints"]) - 1
    qpos = np.concatenate([reference["position"], reference["quaternion"], reference["joints"]], axis=1)
    qvel = np.concatenate([reference["velocity"], reference["angular_velocity"], reference["joints_velocity"]], axis=1)
    act = pose_to_action(reference["joints"])
    return np.arange(steps), np.concatenate([qpos, qvel, act], axis=1)[:steps].astype(np.float64)


class OwnStartStates:
    """The physics states an expert's training episodes reach ``min_age`` or more steps after their start.

    Every ``every`` steps past ``min_age`` one state per episode is kept, at most ``capacity`` (the oldest are
    overwritten), with its step in the snippet. Call :meth:`observe` after each vector-env step.

    Args:
        snippet: the snippet the envs track (its steps index the states).
        num_envs: worlds of the vector env.
        min_age: the first episode step whose state is kept.
        every: keep one state every this many steps after it.
        capacity: states kept.
    """

    def __init__(self, snippet: Snippet, num_envs: int, min_age: int, every: int = 10, capacity: int = 512):
        if min_age < 1 or every < 1 or capacity < 1:
            raise ValueError(f"min_age, every and capacity must be >= 1; got {min_age}, {every} and {capacity}.")
        self.snippet, self.last_step = snippet, snippet_steps(snippet) - 1
        self.min_age, self.every, self.capacity = int(min_age), int(every), int(capacity)
        self.age = np.zeros(num_envs, np.int64)
        self.steps = np.zeros(capacity, np.int64)
        self.states: np.ndarray | None = None
        self.count = 0  # states kept so far, including those overwritten

    def observe(self, info: dict, done: np.ndarray, resetting: np.ndarray) -> None:
        """One vector-env step: ``info`` its ``physics_state`` and ``time_in_clip``; ``done`` the episodes it ended;
        ``resetting`` the worlds whose step only reset them (next-step autoreset)."""
        self.age[resetting] = 0
        self.age[~resetting] += 1
        steps = clip_steps_at(self.snippet, info["time_in_clip"]) - self.snippet.start
        due = (self.age - self.min_age) % self.every == 0
        keep = np.flatnonzero(~done & ~resetting & (self.age >= self.min_age) & due & (steps < self.last_step))
        if not len(keep):
            return
        physics_states = np.asarray(info["physics_state"])
        if self.states is None:
            self.states = np.zeros((self.capacity, physics_states.shape[1]))
        slots = (self.count + np.arange(len(keep))) % self.capacity
        self.steps[slots], self.states[slots] = steps[keep], physics_states[keep]
        self.count += len(keep)

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def starts(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps in the snippet, physics states) of the states kept, for ``set_start_states``."""
        n = len(self)
        if self.states is None or not n:
            raise ValueError("no state kept yet.")
        return self.steps[:n], self.states[:n]
