"""MoCapAct's motion completion: keep moving after the reference clip runs out.

The tracking task, changed in three ways: the reference stops at the clip's last
step and stays there (so the tracking error keeps being measured against it),
there is no reward, and an episode ends only when the walker has fallen (a geom
other than the feet touches the floor) *and* its tracking error exceeds the
threshold, or after ``max_steps`` steps. While the ``prompting`` flag is set, a
fall does not end the episode: the policy under test then starts from the fall.
"""

from __future__ import annotations

from dm_control.locomotion.tasks.reference_pose import tracking

from mocapact_envs.tasks.falling import NonFootGroundContact


class MotionCompletion(tracking.MultiClipMocapTracking):
    """``MultiClipMocapTracking`` with a frozen reference after the clip's end and fall termination."""

    def __init__(self, *args, max_steps: int = 500, **kwargs):
        super().__init__(*args, **kwargs)
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        self._max_steps = int(max_steps)
        self._fallen = NonFootGroundContact(self._walker, self._arena)
        self._steps = 0
        self._failed = False
        self.prompting = False
        """While True (the prompt), a fall does not end the episode."""

    def initialize_episode(self, physics, random_state):
        super().initialize_episode(physics, random_state)
        self._fallen.bind(physics)
        self._steps = 0
        self._failed = False

    def after_step(self, physics, random_state):
        # At the clip's end, step back once so the parent's increment lands on the
        # last step again: the reference is frozen there.
        if self._time_step >= self._last_step:
            self._time_step = self._last_step - 1
        super().after_step(physics, random_state)
        self._end_mocap = False
        self._steps += 1
        fallen = self._fallen(physics) and self._termination_error > self._termination_error_threshold
        self._failed = fallen and not self.prompting

    def get_reward(self, physics) -> float:
        return 0.0

    def should_terminate_episode(self, physics) -> bool:
        return self._failed or self._steps >= self._max_steps

    def get_discount(self, physics) -> float:
        return 0.0 if self._failed else 1.0

    @property
    def name(self):
        return "MotionCompletion"
