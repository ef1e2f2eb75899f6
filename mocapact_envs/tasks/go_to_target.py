"""MoCapAct's go-to-target transfer task: dm_control's ``GoToTarget`` with a moving target.

The walker and a target spawn uniformly on the floor. The reward is 1 while the
walker's root is within ``distance_tolerance`` of the target in the ground plane,
and after ``steps_before_moving_target`` rewarded steps the target respawns. An
episode fails (discount 0) when any walker geom other than the feet touches the
floor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dm_control.composer import variation
from dm_control.locomotion.tasks import go_to_target

from mocapact_envs.tasks.standing_start import standing_start_environment, standing_walker
from mocapact_envs.tasks.tracking_settings import TrackingSettings

#: The egocentric target position, 3 dims, as dm_control's task names it.
TARGET_OBSERVABLE = "walker/target"


class GoToTarget(go_to_target.GoToTarget):
    """dm_control's ``GoToTarget`` that draws the target without recompiling the model.

    dm_control draws the target's spawn position in ``initialize_episode_mjcf``,
    which forces a recompile of the MuJoCo model every episode. Here the same draw,
    from the same random state and in the same order (target, then walker), sets the
    target through the physics in ``initialize_episode``, so an environment built
    with ``recompile_mjcf_every_episode=False`` still gets a new target each episode.
    The count of rewarded steps also restarts with each episode (dm_control carries
    it over), so an episode depends only on its seed.
    """

    def initialize_episode_mjcf(self, random_state):
        self._arena.regenerate(random_state=random_state)

    def initialize_episode(self, physics, random_state):
        target_x, target_y = variation.evaluate(self._target_spawn_position, random_state=random_state)
        physics.bind(self._target).pos = [target_x, target_y, 0.0]
        self._reward_step_counter = 0
        super().initialize_episode(physics, random_state)

    def distance_to_target(self, physics) -> float:
        """The ground-plane distance from the walker's root to the target, as the reward measures it."""
        offset = physics.bind(self._target).pos[:2] - physics.bind(self._walker.root_body).xpos[:2]
        return float(np.linalg.norm(offset))


def build_go_to_target_environment(
    standing_qpos: np.ndarray,
    observables: Sequence[str],
    *,
    arena_size: tuple[float, float] = (8.0, 8.0),
    moving_target: bool = True,
    steps_before_moving_target: int = 10,
    distance_tolerance: float = 1.0,
    episode_steps: int = 833,
    physics_timestep: float = TrackingSettings.physics_timestep,
    control_timestep: float = TrackingSettings.control_timestep,
    seed: int | np.random.RandomState | None = None,
):
    """A ``composer.Environment`` of the task with only ``observables`` enabled.

    The episode ends after ``episode_steps`` control steps (discount 1).
    """
    from dm_control.locomotion.arenas import floors

    walker = standing_walker(standing_qpos)
    task = GoToTarget(
        walker=walker,
        arena=floors.Floor(size=arena_size),
        moving_target=moving_target,
        steps_before_moving_target=steps_before_moving_target,
        distance_tolerance=distance_tolerance,
        physics_timestep=physics_timestep,
        control_timestep=control_timestep,
    )
    return standing_start_environment(task, walker, observables, episode_steps, seed)
