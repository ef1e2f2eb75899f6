"""Gymnasium registration of every ``mocapact/`` environment id."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

TRACKING_ENTRY_POINT = "mocapact_envs.envs.tracking:MocapTrackingEnv"
#: ``gym.make_vec(..., vectorization_mode="vector_entry_point")``: N worlds in one batched env.
TRACKING_VECTOR_ENTRY_POINT = "mocapact_envs.envs.tracking_vector:MocapTrackingVectorEnv"


def tracking_env_id(clip_id: str) -> str:
    return f"mocapact/MocapTracking-{clip_id}-v0"


def register_envs() -> None:
    """Registers the tracking task for each clip of dm_control's ``ALL`` and a generic one, and the transfer tasks."""
    from mocapact_envs.mocap.ids import dm_control_subset

    register_transfer_envs()
    register_motion_completion_envs()
    if "mocapact/MocapTracking-v0" in registry:
        return
    # No TimeLimit: an episode ends at the snippet's end or on tracking failure.
    entry_points = {"entry_point": TRACKING_ENTRY_POINT, "vector_entry_point": TRACKING_VECTOR_ENTRY_POINT}
    register(id="mocapact/MocapTracking-v0", **entry_points)
    for clip_id in dm_control_subset("ALL"):
        register(id=tracking_env_id(clip_id), kwargs={"clips": clip_id}, **entry_points)


TRANSFER_ENTRY_POINTS = {
    "mocapact/GoToTarget-v0": "mocapact_envs.envs.transfer:make_go_to_target_env",
    "mocapact/VelocityControl-v0": "mocapact_envs.envs.transfer:make_velocity_control_env",
}


def register_transfer_envs() -> None:
    """Registers MoCapAct's transfer tasks; ``low_level_policy=`` in ``gym.make`` wraps them.

    ``max_episode_steps`` is each task's own ``episode_steps`` default, so ``spec.max_episode_steps``
    tells the episode length; the ``TimeLimit`` ``gym.make`` adds truncates at the step the
    environment truncates itself. A longer ``episode_steps=`` also needs ``max_episode_steps=``.
    """
    from mocapact_envs.envs.transfer import GO_TO_TARGET_EPISODE_STEPS, VELOCITY_CONTROL_EPISODE_STEPS

    max_episode_steps = {
        "mocapact/GoToTarget-v0": GO_TO_TARGET_EPISODE_STEPS,
        "mocapact/VelocityControl-v0": VELOCITY_CONTROL_EPISODE_STEPS,
    }
    for env_id, entry_point in TRANSFER_ENTRY_POINTS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps[env_id])


MOTION_COMPLETION_ENTRY_POINT = "mocapact_envs.envs.motion_completion:MotionCompletionEnv"


def register_motion_completion_envs() -> None:
    """Registers a generic motion completion id and one for each clip the shipped experts cover.

    Each id makes an environment without arguments (``prompt_experts`` defaults to the shipped
    experts); other clips need ``gym.make("mocapact/MotionCompletion-v0", clips=..., prompt_experts=...)``.
    """
    from mocapact_envs.mocap.ids import parse_snippet
    from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS

    if "mocapact/MotionCompletion-v0" in registry:
        return
    # No TimeLimit: the environment truncates at its own max_steps.
    register(id="mocapact/MotionCompletion-v0", entry_point=MOTION_COMPLETION_ENTRY_POINT)
    # Shipped runs are <clip>-<start>-<end> folders (MoCapAct's layout): their names say the clips.
    runs = SHIPPED_EXPERTS.iterdir() if SHIPPED_EXPERTS.is_dir() else ()
    shipped_clips = sorted({parse_snippet(run.name).clip_id for run in runs if run.is_dir()})
    for clip_id in shipped_clips:
        register(
            id=f"mocapact/MotionCompletion-{clip_id}-v0",
            entry_point=MOTION_COMPLETION_ENTRY_POINT,
            kwargs={"clips": clip_id},
        )
