"""MoCapAct's transfer tasks, ``GoToTarget`` and ``VelocityControl``, as Gymnasium environments."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from mocapact_envs.envs.dm_control_adapter import DEFAULT_CAMERA, DmControlEnv
from mocapact_envs.envs.tracking import reference_source
from mocapact_envs.mocap.source import get_source
from mocapact_envs.tasks.checks import check_arena_size, check_integer, check_positive
from mocapact_envs.tasks.go_to_target import TARGET_OBSERVABLE, build_go_to_target_environment
from mocapact_envs.tasks.observables import resolve_observables
from mocapact_envs.tasks.standing_start import (
    DEFAULT_STANDING_POSE_CLIP,
    DEFAULT_STANDING_POSE_STEP,
    load_standing_qpos,
)
from mocapact_envs.tasks.tracking_settings import DEFAULT_MAX_LATENT, TrackingSettings
from mocapact_envs.tasks.velocity_control import (
    TORSO_VELOCITY_OBSERVABLES,
    VELOCITY_COMMAND_OBSERVABLE,
    build_velocity_control_environment,
)

if TYPE_CHECKING:  # torch loads only when a low-level policy is used
    from mocapact_envs.policies.low_level import LowLevelPolicy

#: MoCapAct's episode lengths: 25 s and 60 s at 0.03 s a step.
GO_TO_TARGET_EPISODE_STEPS = 833
VELOCITY_CONTROL_EPISODE_STEPS = 2000


def _standing_pose_source(clip_id: str, mocap_path: str | Path | None) -> dict:
    """``metadata["reference_source"]``: where the standing pose's clip was read and its content digest."""
    return reference_source(get_source(mocap_path).clip_set(clip_id), mocap_path)


class TransferEnv(DmControlEnv):
    """What MoCapAct's transfer tasks share: the walker standing up from a clip's pose on a floor.

    The constructor arguments every transfer env takes, their defaults and checks are here, once;
    a subclass adds its task's arguments, names its task's observables in
    :attr:`task_observables` and builds the composer environment in :meth:`_build_dm_env`.

    Args:
        mocap_path: where the standing pose's clip is read; defaults to
            ``$MOCAPACT_MOCAP_PATH``, then to dm_control's official file.
        standing_pose_clip: the clip the standing start pose comes from (MoCapAct
            used ``"CMU_040_12"``, which the offline clips lack).
        standing_pose_step: the step of that clip.
        proprioception: an observation set name (``"cmu_humanoid"``, ``"base"``, ...)
            or walker observable keys; the task's observables are always added.
        arena_size: the floor's x and y extent in metres.
        episode_steps: steps before the episode is truncated.
        act_noise: standard deviation of Gaussian action noise.
        physics_timestep: MuJoCo's step in seconds.
        control_timestep: seconds per environment step, a multiple of ``physics_timestep``;
            ``metadata["render_fps"]`` is one frame a step.
        render_mode: ``None``, ``"rgb_array"``, ``"depth_array"`` or ``"human"`` (MuJoCo's viewer window; see
            :class:`~mocapact_envs.envs.dm_control_adapter.DmControlEnv`).
        width, height, camera: the rendered image and the camera's name or id.
    """

    #: The task's observable keys, added to ``proprioception``'s.
    task_observables: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        mocap_path: str | Path | None = None,
        standing_pose_clip: str = DEFAULT_STANDING_POSE_CLIP,
        standing_pose_step: int = DEFAULT_STANDING_POSE_STEP,
        proprioception: str | Sequence[str] = "cmu_humanoid",
        arena_size: tuple[float, float] = (8.0, 8.0),
        episode_steps: int,
        act_noise: float = 0.0,
        physics_timestep: float = TrackingSettings.physics_timestep,
        control_timestep: float = TrackingSettings.control_timestep,
        render_mode: str | None = None,
        width: int = 640,
        height: int = 480,
        camera: str | int = DEFAULT_CAMERA,
    ):
        super().__init__(act_noise=act_noise, render_mode=render_mode, width=width, height=height, camera=camera)
        check_integer("episode_steps", episode_steps, 1, "a positive integer")
        check_positive("physics_timestep", physics_timestep, "> 0 seconds")
        arena_size = check_arena_size(arena_size)
        self._check_task_arguments()
        self.episode_steps = int(episode_steps)
        observable_keys = resolve_observables(proprioception, "proprioception") + self.task_observables
        self._dm_env = self._build_dm_env(
            load_standing_qpos(standing_pose_clip, standing_pose_step, mocap_path),
            observable_keys,
            arena_size=arena_size,
            episode_steps=self.episode_steps,
            physics_timestep=physics_timestep,
            control_timestep=control_timestep,
        )
        self._task = self._dm_env.task
        self._setup_spaces(observable_keys)
        self.reference_source = _standing_pose_source(standing_pose_clip, mocap_path)
        self.metadata = {**self.metadata, "reference_source": self.reference_source}

    def _check_task_arguments(self) -> None:
        """Raises naming a bad task argument (after the shared ones are checked, before anything is built)."""

    def _build_dm_env(self, standing_qpos: Any, observable_keys: tuple[str, ...], **settings: Any):
        """The task's composer environment; ``settings``: ``arena_size``, ``episode_steps`` and the timesteps."""
        raise NotImplementedError


class GoToTargetEnv(TransferEnv):
    """Walk to a target that moves once reached, as in MoCapAct's transfer tasks.

    dm_control's ``GoToTarget`` task with ``moving_target=True`` and MoCapAct's
    walker, ``CMUHumanoidPositionControlledV2020`` (56 position actuators with
    activation dynamics), on an 8 m x 8 m floor. Each episode the target and the
    walker spawn uniformly on the floor; the walker starts at rest in a standing
    pose from a real clip (see ``mocapact_envs.tasks.standing_start``) with its yaw
    zeroed, so it faces the same way every episode (along -y for the default pose).

    Action space:
        ``Box(-1, 1, (56,), float32)``: normalised actuator targets in the walker's
        (alphabetical) actuator order. ``act_noise > 0`` adds Gaussian noise of that
        standard deviation before clipping. Wrap with
        :class:`~mocapact_envs.wrappers.latent_actions.LowLevelActionWrapper` (or pass
        ``low_level_policy=`` to ``gym.make``; ``"pretrained"`` is the shipped decoder) to act through an
        NPMP decoder instead.

    Observation space:
        ``Dict`` of float32 ``Box`` es in alphabetical key order: the CMU humanoid
        proprioception (``proprioception="cmu_humanoid"``, 224 dims) and
        ``walker/target``, the target's position in the walker's egocentric frame
        (3 dims); 227 dims in all.

    Reward:
        1 while the walker's root is within ``distance_tolerance`` (1 m) of the
        target in the ground plane, else 0. After ``steps_before_moving_target``
        (10) rewarded steps the target respawns uniformly on the floor.

    Episode end:
        ``terminated`` when any walker geom other than the feet touches the floor
        (dm_control's discount 0); ``truncated`` after ``episode_steps`` steps
        (833, 25 s at 0.03 s a step).

    Info:
        ``distance_to_target`` (m), ``target_position`` (x, y) and ``physics_state``
        (MuJoCo's ``qpos, qvel, act``, copied).

    Args:
        moving_target: respawn the target after it has been reached.
        steps_before_moving_target: rewarded steps before the target respawns.
        distance_tolerance: the root-to-target distance (m) that earns reward.
        episode_steps: steps before the episode is truncated.
        **kwargs: the arguments every transfer env takes, with their defaults, as in
            :class:`TransferEnv`: ``mocap_path``, ``standing_pose_clip``, ``standing_pose_step``,
            ``proprioception``, ``arena_size`` (spawn positions are uniform on it), ``act_noise``,
            ``physics_timestep`` (0.005), ``control_timestep`` (0.03), ``render_mode``, ``width``,
            ``height`` and ``camera``.

    Version history:
        * v0: MoCapAct's go-to-target task (mocapact-envs 0.1). The registered spec's
          ``max_episode_steps`` is 833 (it was ``None``): ``gym.make``'s ``TimeLimit`` truncates
          at the step the task truncates itself; a longer ``episode_steps`` needs
          ``max_episode_steps`` too. Other
          changes since keep the id and the task (dynamics, reward, episode ends):
          ``step()`` with no episode running raises ``RuntimeError`` (it raised ``TypeError``
          or stepped a new episode), NaN actions raise ``ValueError`` naming them and end the
          episode, bad arguments (and unknown ``reset()`` options) raise errors naming them,
          ``metadata["reference_source"]``,
          pickling and ``copy.deepcopy``, ``spec.to_json()`` with path arguments;
          ``render_mode="human"`` (MuJoCo's viewer) and ``"depth_array"``.
    """

    task_observables = (TARGET_OBSERVABLE,)

    def __init__(
        self,
        *,
        moving_target: bool = True,
        steps_before_moving_target: int = 10,
        distance_tolerance: float = 1.0,
        episode_steps: int = GO_TO_TARGET_EPISODE_STEPS,
        **kwargs: Any,
    ):
        self._task_arguments = dict(
            moving_target=moving_target,
            steps_before_moving_target=steps_before_moving_target,
            distance_tolerance=distance_tolerance,
        )
        super().__init__(episode_steps=episode_steps, **kwargs)

    def _check_task_arguments(self) -> None:
        check_integer("steps_before_moving_target", self._task_arguments["steps_before_moving_target"], 1)
        check_positive("distance_tolerance", self._task_arguments["distance_tolerance"])

    def _build_dm_env(self, standing_qpos: Any, observable_keys: tuple[str, ...], **settings: Any):
        return build_go_to_target_environment(standing_qpos, observable_keys, **self._task_arguments, **settings)

    def _info(self) -> dict[str, Any]:
        physics = self.physics
        return {
            "distance_to_target": self._task.distance_to_target(physics),
            "target_position": self._task.target_position(physics)[:2].copy(),
            "physics_state": physics.get_state().copy(),
        }


class VelocityControlEnv(TransferEnv):
    """Move at a commanded speed and heading that change every 10 s, as in MoCapAct's transfer tasks.

    MoCapAct's walker, ``CMUHumanoidPositionControlledV2020``, starts at rest in a
    standing pose from a real clip (see ``mocapact_envs.tasks.standing_start``) at
    the origin, facing the same way every episode (along -y for the default pose).
    The command, a speed from U(0, ``max_speed``) and a world-frame heading from
    U(0, 2 pi), is drawn at the start and every ``steps_before_changing_velocity``
    steps.

    Action space:
        ``Box(-1, 1, (56,), float32)``, as in :class:`GoToTargetEnv`.

    Observation space:
        ``Dict`` of float32 ``Box`` es in alphabetical key order: the CMU humanoid
        proprioception (224 dims), ``walker/torso_xvel`` and ``walker/torso_yvel``
        (the torso's world-frame velocity, 1 dim each) and ``task/velocity_command``
        (4 dims: target speed, sin and cos of the target heading, and the fraction
        of the command's period that has passed); 230 dims in all.

    Reward:
        ``exp(-((speed - |v|) / reward_margin)^2) * ((cos(heading error) + 1) / 2)^direction_exponent``
        with ``v`` the torso's horizontal velocity (the direction term is 1 while
        ``v`` is zero); in [0, 1]. A step is rewarded for the command the walker
        followed during it, also the step after which a new command is drawn.

    Episode end:
        ``terminated`` when any walker geom other than the feet touches the floor
        (dm_control's discount 0); ``truncated`` after ``episode_steps`` steps
        (2000, 60 s at 0.03 s a step).

    Info:
        ``target_speed`` (m/s) and ``target_heading`` (rad) of the command in force
        for the next step, ``torso_velocity`` (x, y) and ``physics_state`` (MuJoCo's ``qpos, qvel, act``, copied).

    Args:
        max_speed: the largest commanded speed in m/s.
        reward_margin: the speed error (m/s) at which the speed term is exp(-1).
        direction_exponent: the power of the direction term (MoCapAct published 7;
            its code's default was 1).
        steps_before_changing_velocity: steps between command draws (MoCapAct
            published 333, 10 s; its code's default was 166).
        episode_steps: steps before the episode is truncated.
        **kwargs: the arguments every transfer env takes, as in :class:`TransferEnv`;
            ``arena_size`` here is the floor's rendered x and y extent in metres (the floor
            plane itself is unbounded for contacts).

    Version history:
        * v0: MoCapAct's velocity-control task (mocapact-envs 0.1). The registered spec's
          ``max_episode_steps`` is 2000 (it was ``None``), as :class:`GoToTargetEnv`'s. Other
          changes since keep the id and the task (dynamics, reward, episode ends):
          ``step()`` with no episode running raises ``RuntimeError`` (it raised ``TypeError``
          or stepped a new episode), NaN actions raise ``ValueError`` naming them and end the
          episode, bad arguments (and unknown ``reset()`` options) raise errors naming them,
          ``metadata["reference_source"]``,
          pickling and ``copy.deepcopy``, ``spec.to_json()`` with path arguments;
          ``render_mode="human"`` (MuJoCo's viewer) and ``"depth_array"``.
    """

    task_observables = TORSO_VELOCITY_OBSERVABLES + (VELOCITY_COMMAND_OBSERVABLE,)

    def __init__(
        self,
        *,
        max_speed: float = 4.5,
        reward_margin: float = 0.75,
        direction_exponent: float = 7.0,
        steps_before_changing_velocity: int = 333,
        episode_steps: int = VELOCITY_CONTROL_EPISODE_STEPS,
        **kwargs: Any,
    ):
        self._task_arguments = dict(
            max_speed=max_speed,
            reward_margin=reward_margin,
            direction_exponent=direction_exponent,
            steps_before_changing_velocity=steps_before_changing_velocity,
        )
        super().__init__(episode_steps=episode_steps, **kwargs)

    def _build_dm_env(self, standing_qpos: Any, observable_keys: tuple[str, ...], **settings: Any):
        return build_velocity_control_environment(standing_qpos, observable_keys, **self._task_arguments, **settings)

    def _info(self) -> dict[str, Any]:
        physics = self.physics
        return {
            "target_speed": float(self._task.target_speed),
            "target_heading": float(self._task.target_heading),
            "torso_velocity": self._task.torso_velocity(physics),
            "physics_state": physics.get_state().copy(),
        }


def _maybe_wrap(env: gym.Env, low_level_policy: LowLevelPolicy | str | Path | None, max_latent: float) -> gym.Env:
    if low_level_policy is None:
        return env
    from mocapact_envs.wrappers.latent_actions import LowLevelActionWrapper

    return LowLevelActionWrapper(env, low_level_policy, max_latent=max_latent)


def make_go_to_target_env(
    low_level_policy: LowLevelPolicy | str | Path | None = None, max_latent: float = DEFAULT_MAX_LATENT, **kwargs: Any
) -> gym.Env:
    """:class:`GoToTargetEnv`; with ``low_level_policy`` (a policy, its directory, or ``"pretrained"``: the shipped decoder) acting through its latent space."""
    return _maybe_wrap(GoToTargetEnv(**kwargs), low_level_policy, max_latent)


def make_velocity_control_env(
    low_level_policy: LowLevelPolicy | str | Path | None = None, max_latent: float = DEFAULT_MAX_LATENT, **kwargs: Any
) -> gym.Env:
    """:class:`VelocityControlEnv`; with ``low_level_policy`` (a policy, its directory, or ``"pretrained"``: the shipped decoder) acting through its latent space."""
    return _maybe_wrap(VelocityControlEnv(**kwargs), low_level_policy, max_latent)


# gym.make reads an entry point's metadata to check render_mode.
make_go_to_target_env.metadata = GoToTargetEnv.metadata  # type: ignore[attr-defined]
make_velocity_control_env.metadata = VelocityControlEnv.metadata  # type: ignore[attr-defined]
