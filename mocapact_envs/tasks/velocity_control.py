"""MoCapAct's velocity-control transfer task, as a dm_control composer task.

The walker must move at a commanded speed in a commanded direction. The command,
a speed from U(0, ``max_speed``) and a heading from U(0, 2 pi) in the world frame,
is drawn at the start of an episode and again every
``steps_before_changing_velocity`` steps. The reward multiplies a speed term and a
direction term of the torso's horizontal velocity ``v``:

    exp(-((speed - |v|) / reward_margin)^2) * ((cos(heading error) + 1) / 2)^direction_exponent

(the direction term is 1 while ``v`` is zero), measured against the command the
walker was following during the step. An episode fails (discount 0) when
any walker geom other than the feet touches the floor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from dm_control import composer
from dm_control.composer.observation import observable

from mocapact_envs.tasks.checks import check_integer, check_non_negative, check_positive
from mocapact_envs.tasks.falling import NonFootGroundContact
from mocapact_envs.tasks.standing_start import standing_start_environment, standing_walker
from mocapact_envs.tasks.tracking_settings import TrackingSettings

#: The command, 4 dims: target speed (m/s), sin and cos of the target heading, and
#: the fraction of the command's period that has passed.
VELOCITY_COMMAND_OBSERVABLE = "task/velocity_command"
#: The torso's world-frame velocity along x and along y, 1 dim each.
TORSO_VELOCITY_OBSERVABLES = ("walker/torso_xvel", "walker/torso_yvel")


class VelocityControl(composer.Task):
    """Track a commanded horizontal velocity that changes at a fixed period."""

    def __init__(
        self,
        walker,
        arena,
        *,
        max_speed: float = 4.5,
        reward_margin: float = 0.75,
        direction_exponent: float = 7.0,
        steps_before_changing_velocity: int = 333,
        physics_timestep: float = TrackingSettings.physics_timestep,
        control_timestep: float = TrackingSettings.control_timestep,
    ):
        # Checked here, when the task is made: NaN would otherwise pass and fail at the first reset.
        check_non_negative("max_speed", max_speed, ">= 0 m/s, finite")
        check_positive("reward_margin", reward_margin, "> 0 m/s, finite")
        check_non_negative("direction_exponent", direction_exponent, ">= 0, finite")
        check_integer("steps_before_changing_velocity", steps_before_changing_velocity, 1)
        self._walker = walker
        self._arena = arena
        self._walker.create_root_joints(self._arena.attach(self._walker))
        self._fallen = NonFootGroundContact(walker, arena)
        self._max_speed = float(max_speed)
        self._reward_margin = float(reward_margin)
        self._direction_exponent = float(direction_exponent)
        self._steps_before_changing_velocity = int(steps_before_changing_velocity)
        self._target_speed = 0.0
        self._target_heading = 0.0
        self._steps_since_command = 0
        self._failure_termination = False
        self._reward = 0.0
        self._task_observables = {
            VELOCITY_COMMAND_OBSERVABLE: observable.Generic(lambda physics: self.velocity_command()),
        }
        self.set_timesteps(physics_timestep=physics_timestep, control_timestep=control_timestep)

    @property
    def root_entity(self):
        return self._arena

    @property
    def task_observables(self):
        return self._task_observables

    @property
    def target_speed(self) -> float:
        return self._target_speed

    @property
    def target_heading(self) -> float:
        """The commanded direction in the world frame, radians from the x axis."""
        return self._target_heading

    def velocity_command(self) -> np.ndarray:
        """``[speed, sin(heading), cos(heading), phase]``, phase in [0, 1)."""
        phase = self._steps_since_command / self._steps_before_changing_velocity
        heading = self._target_heading
        return np.array([self._target_speed, np.sin(heading), np.cos(heading), phase])

    def torso_velocity(self, physics) -> np.ndarray:
        """The torso's world-frame horizontal velocity, as the reward measures it."""
        return np.array(physics.bind(self._walker.root_body).subtree_linvel[:2])

    def _draw_command(self, random_state) -> None:
        self._target_speed = random_state.uniform(0.0, self._max_speed)
        self._target_heading = random_state.uniform(0.0, 2 * np.pi)
        self._steps_since_command = 0

    def initialize_episode(self, physics, random_state):
        self._walker.reinitialize_pose(physics, random_state)
        self._draw_command(random_state)
        self._failure_termination = False
        self._fallen.bind(physics)

    def before_step(self, physics, action, random_state):
        self._walker.apply_action(physics, action, random_state)

    def after_step(self, physics, random_state):
        self._failure_termination = self._fallen(physics)
        # The step is rewarded for the command the walker was following. MoCapAct's
        # code rewarded the step that ends a period against the next command, which
        # the walker could not have seen.
        self._reward = self._command_reward(physics)
        self._steps_since_command += 1
        if self._steps_since_command >= self._steps_before_changing_velocity:
            self._draw_command(random_state)

    def get_reward(self, physics) -> float:
        return self._reward

    def _command_reward(self, physics) -> float:
        velocity = self.torso_velocity(physics)
        speed = float(np.linalg.norm(velocity))
        speed_reward = np.exp(-(((self._target_speed - speed) / self._reward_margin) ** 2))
        if np.isclose(speed, 0.0):
            # A walker at rest has no heading; MoCapAct counts its direction as right.
            direction_reward = 1.0
        else:
            target_direction = np.array([np.cos(self._target_heading), np.sin(self._target_heading)])
            cos_error = float(np.dot(velocity / speed, target_direction))
            direction_reward = ((cos_error + 1.0) / 2.0) ** self._direction_exponent
        return float(speed_reward * direction_reward)

    def should_terminate_episode(self, physics) -> bool:
        return self._failure_termination

    def get_discount(self, physics) -> float:
        return 0.0 if self._failure_termination else 1.0


def build_velocity_control_environment(
    standing_qpos: np.ndarray,
    observables: Sequence[str],
    *,
    arena_size: tuple[float, float] = (8.0, 8.0),
    max_speed: float = 4.5,
    reward_margin: float = 0.75,
    direction_exponent: float = 7.0,
    steps_before_changing_velocity: int = 333,
    episode_steps: int = 2000,
    physics_timestep: float = TrackingSettings.physics_timestep,
    control_timestep: float = TrackingSettings.control_timestep,
    seed: int | np.random.RandomState | None = None,
):
    """A ``composer.Environment`` of the task with only ``observables`` enabled.

    The episode ends after ``episode_steps`` control steps (discount 1).
    """
    from dm_control.locomotion.arenas import floors

    walker = standing_walker(standing_qpos)
    task = VelocityControl(
        walker,
        floors.Floor(size=arena_size),
        max_speed=max_speed,
        reward_margin=reward_margin,
        direction_exponent=direction_exponent,
        steps_before_changing_velocity=steps_before_changing_velocity,
        physics_timestep=physics_timestep,
        control_timestep=control_timestep,
    )
    return standing_start_environment(task, walker, observables, episode_steps, seed)
