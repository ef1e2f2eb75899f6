"""MoCapAct's clip-tracking task: dm_control's ``MultiClipMocapTracking``.

The CMU humanoid (``CMUHumanoidPositionControlledV2020``) on a flat floor tracks
reference clips with the ``comic`` reward, ending an episode when the tracking
error exceeds the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mocapact_envs.mocap.source import ClipSet

#: Where the reference ghost is drawn, relative to the reference pose. MoCapAct
#: draws it on top of the walker.
GHOST_OFFSET = (0.0, 0.0, 0.0)


def build_tracking_environment(
    clip_set: ClipSet,
    observables: Sequence[str],
    *,
    ref_steps: Sequence[int] = (0,),
    random_start: bool = True,
    min_steps: int = 10,
    termination_error_threshold: float = 0.3,
    reward_type: str = "comic",
    physics_timestep: float = 0.005,
    control_timestep: float = 0.03,
    with_ghost: bool = False,
    arena_size: tuple[float, float] = (8.0, 8.0),
    seed: int | np.random.RandomState | None = None,
    task_class=None,
    **task_kwargs,
):
    """A ``composer.Environment`` of the tracking task with only ``observables`` enabled.

    ``task_class`` (default dm_control's ``MultiClipMocapTracking``) and
    ``task_kwargs`` let variants of the task, such as motion completion, reuse it.
    """
    check_tracking_arguments(
        clip_set, ref_steps, random_start, min_steps, termination_error_threshold, physics_timestep
    )
    from dm_control import composer
    from dm_control.locomotion.arenas import floors
    from dm_control.locomotion.tasks.reference_pose import tracking
    from dm_control.locomotion.walkers import cmu_humanoid

    task_class = task_class or tracking.MultiClipMocapTracking
    task = task_class(
        walker=cmu_humanoid.CMUHumanoidPositionControlledV2020,
        arena=floors.Floor(size=arena_size),
        ref_path=str(clip_set.hdf5_path),
        ref_steps=tuple(ref_steps),
        dataset=clip_set.clip_collection(),
        min_steps=min_steps,
        reward_type=reward_type,
        termination_error_threshold=termination_error_threshold,
        physics_timestep=physics_timestep,
        always_init_at_clip_start=not random_start,
        ghost_offset=GHOST_OFFSET if with_ghost else None,
        **task_kwargs,
    )
    # The reference clip fixes the control step; refuse a mismatch instead of
    # silently tracking at the wrong rate.
    if not np.isclose(task.control_timestep, control_timestep):
        raise ValueError(
            f"control_timestep={control_timestep} but the reference clips step at {task.control_timestep} s."
        )
    walker_observables = task._walker.observables.as_dict(fully_qualified=False)
    wanted = {key.split("/", 1)[1] for key in observables}
    missing = wanted - set(walker_observables)
    if missing:
        raise ValueError(f"the tracking task has no observable(s) {sorted(missing)}")
    # Only what the policy sees is computed: each disabled observable saves work.
    for name, observable in walker_observables.items():
        observable.enabled = name in wanted
    for name, observable in task.observables.items():
        if not name.startswith("walker/"):
            observable.enabled = False
    return composer.Environment(task=task, random_state=seed, strip_singleton_obs_buffer_dim=True)


def check_tracking_arguments(
    clip_set: ClipSet,
    ref_steps: Sequence[int],
    random_start: bool,
    min_steps: int,
    termination_error_threshold: float,
    physics_timestep: float,
) -> None:
    """Raises ``ValueError`` naming the bad value where dm_control would fail later, or run a task that
    makes no sense (a negative threshold ends every episode at once)."""
    if not termination_error_threshold > 0:  # NaN fails too
        raise ValueError(
            f"termination_error_threshold must be > 0 (float('inf') never terminates), got {termination_error_threshold!r}."
        )
    if not physics_timestep > 0:
        raise ValueError(f"physics_timestep must be > 0 seconds, got {physics_timestep!r}.")
    if isinstance(min_steps, bool) or int(min_steps) != min_steps or min_steps < 0:
        raise ValueError(f"min_steps must be an integer >= 0, got {min_steps!r}.")
    max_ref_step = max(ref_steps)
    too_short = [s for s in clip_set.snippets if s.end - s.start <= max_ref_step]
    if too_short:
        snippet = too_short[0]
        raise ValueError(
            f"ref_steps={tuple(ref_steps)} looks {max_ref_step} steps ahead, but snippet {snippet.id} has only "
            f"{snippet.end - snippet.start} steps after its start; the largest reference step must be smaller."
        )
    if random_start and all(s.end - max_ref_step - min_steps <= s.start for s in clip_set.snippets):
        longest = max(clip_set.snippets, key=lambda s: s.end - s.start)
        allowed = longest.end - longest.start - max_ref_step - 1
        raise ValueError(
            f"min_steps={min_steps} leaves no random start: a start must leave min_steps steps before the "
            f"last trackable step, and the longest snippet, {longest.id}, allows at most min_steps={allowed} "
            f"with ref_steps={tuple(ref_steps)}."
        )
