"""The standing start of the transfer tasks: the walker in one pose of a real clip.

MoCapAct starts every transfer-task episode from frame 0 of CMU_040_12. That clip
is not among the offline clips, so the default here is another real clip's first
frame, chosen by rendering the first frames of the offline clips and holding each
pose in simulation:

``CMU_038_01`` step 0, the first frame of a walk (the subject already moves at
about 0.7 m/s; the start drops that velocity). It is a complete recording (it
starts at the original frame 1), so its first frame is the same moment in the
offline AMC folder and in dm_control's official HDF5 file, and it is in
dm_control's ``cmu_subsets.ALL``, so both sources have it. The body is upright
with the arms down, the right foot flat on the floor at the clip's own height
(no drop, no penetration) and the left foot lifted just behind it. (Like every
first frame tried, it falls within about 0.7 s under zero actions: balancing is
the policy's job.) Other walk starts fare worse: CMU_008_01's first frame sits
low, its left shin inside the floor, so the contact solver kicks the walker up at
the start; CMU_016_22 is a cropped file whose first frame is mid-stride at 2 m/s
and a different moment from the official file's first frame.
Offline clips that do start at rest (CMU_049_18 to 20) start in a dance pose.
Pass ``standing_pose_clip="CMU_040_12"`` with dm_control's official file for
MoCapAct's exact start.

The pose keeps its height; its root x, y and yaw are zeroed so the task places
the walker, and it starts at rest (zero velocities), as a standing start should.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mocapact_envs.mocap.source import get_source

DEFAULT_STANDING_POSE_CLIP = "CMU_038_01"
DEFAULT_STANDING_POSE_STEP = 0


def load_standing_qpos(
    clip_id: str = DEFAULT_STANDING_POSE_CLIP,
    step: int = DEFAULT_STANDING_POSE_STEP,
    mocap_path: str | Path | None = None,
) -> np.ndarray:
    """The walker's ``qpos`` (63: root position, root quaternion, 56 joints) at one clip step.

    Root x, y and yaw are zeroed; height, pitch, roll and joint angles are the clip's.
    Raises ``MocapSourceError`` for a clip the source lacks and ``ValueError`` for a
    step outside the clip.
    """
    from dm_control.locomotion.mocap import loader
    from dm_control.utils import transformations

    source = get_source(mocap_path)
    clip_set = source.clip_set(clip_id)
    num_steps = source.num_steps(clip_id)
    if not 0 <= step < num_steps:
        raise ValueError(
            f"standing pose step {step} is outside clip {clip_id}, whose steps in {source.description} "
            f"run from 0 to {num_steps - 1}."
        )
    trajectory = loader.HDF5TrajectoryLoader(str(clip_set.hdf5_path)).get_trajectory(clip_id)
    features = trajectory.as_dict()
    qpos = np.concatenate(
        [
            features["walker/position"][step],
            features["walker/quaternion"][step],
            features["walker/joints"][step],
        ]
    ).astype(np.float64)
    qpos[:2] = 0.0
    euler = transformations.quat_to_euler(qpos[3:7], ordering="ZYX")
    euler[0] = 0.0
    qpos[3:7] = transformations.euler_to_quat(euler, ordering="ZYX")
    return qpos


def standing_pose_initializer(qpos: np.ndarray):
    """A dm_control walker initializer that puts the walker in ``qpos`` at rest."""
    from dm_control.locomotion.tasks.reference_pose import utils
    from dm_control.locomotion.walkers import initializers

    qpos = np.array(qpos, dtype=np.float64)
    qvel = np.zeros(len(qpos) - 1)

    class StandingPoseInitializer(initializers.WalkerInitializer):
        def initialize_pose(self, physics, walker, random_state):
            del random_state
            utils.set_walker(physics, walker, qpos, qvel)

    return StandingPoseInitializer()


def standing_walker(qpos: np.ndarray, name: str = "walker"):
    """MoCapAct's walker, ``CMUHumanoidPositionControlledV2020``, starting in ``qpos``."""
    from dm_control.locomotion.walkers import cmu_humanoid

    return cmu_humanoid.CMUHumanoidPositionControlledV2020(name=name, initializer=standing_pose_initializer(qpos))


def keep_only_observables(task, walker, keys) -> None:
    """Enables exactly the observables named by ``keys`` (``walker/...`` or task keys).

    Every enabled observable is computed each step, so the ones no policy sees are
    switched off. Raises ``ValueError`` naming keys the task does not have.
    """
    wanted = set(keys)
    walker_observables = walker.observables.as_dict(fully_qualified=False)
    task_observables = dict(task.task_observables)
    known = {f"walker/{name}" for name in walker_observables} | set(task_observables)
    missing = sorted(wanted - known)
    if missing:
        raise ValueError(f"the task has no observable(s) {missing}; it has {', '.join(sorted(known))}.")
    for name, observable in walker_observables.items():
        observable.enabled = f"walker/{name}" in wanted
    for name, observable in task_observables.items():
        observable.enabled = name in wanted


def standing_start_environment(task, walker, observables, episode_steps: int, seed=None):
    """The ``composer.Environment`` of a transfer task: only ``observables`` on, ``episode_steps`` long."""
    from dm_control import composer

    keep_only_observables(task, walker, observables)
    return composer.Environment(
        task=task,
        # Half a step of slack: physics time adds up 0.005 s steps with rounding error,
        # and the limit must fall after exactly episode_steps control steps.
        time_limit=(episode_steps - 0.5) * task.control_timestep,
        random_state=seed,
        strip_singleton_obs_buffer_dim=True,
        recompile_mjcf_every_episode=False,
    )
