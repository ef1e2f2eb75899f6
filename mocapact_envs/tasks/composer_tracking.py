"""MoCapAct's clip-tracking task: dm_control's ``MultiClipMocapTracking``.

The CMU humanoid (``CMUHumanoidPositionControlledV2020``) on a flat floor tracks
reference clips with the ``comic`` reward, ending an episode when the tracking
error exceeds the threshold. :func:`build_tracking_environment` builds it from a clip set and
:class:`~mocapact_envs.tasks.tracking_settings.TrackingSettings`; :class:`ComposerTrackingBackend` runs it
behind the :class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend` interface (the reference backend).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mocapact_envs.mocap.source import ClipSet
from mocapact_envs.tasks.dm_env_steps import episode_end_flags, flat_observation
from mocapact_envs.tasks.tracking_settings import TrackingSettings

#: Where the reference ghost is drawn, relative to the reference pose. MoCapAct
#: draws it on top of the walker.
GHOST_OFFSET = (0.0, 0.0, 0.0)


def build_tracking_environment(
    clip_set: ClipSet,
    observables: Sequence[str],
    settings: TrackingSettings,
    *,
    with_ghost: bool = False,
    arena_size: tuple[float, float] = (8.0, 8.0),
    seed: int | np.random.RandomState | None = None,
    task_class=None,
    **task_kwargs,
):
    """A ``composer.Environment`` of the tracking task with only ``observables`` enabled.

    ``task_class`` (default dm_control's ``MultiClipMocapTracking``) and
    ``task_kwargs`` let variants of the task, such as motion completion, reuse it.
    ``settings.random_start`` given per world builds the task with random starts if any world has them.
    """
    settings.check_snippets(clip_set)
    from dm_control import composer
    from dm_control.locomotion.arenas import floors
    from dm_control.locomotion.tasks.reference_pose import tracking
    from dm_control.locomotion.walkers import cmu_humanoid

    task_class = task_class or tracking.MultiClipMocapTracking
    task = task_class(
        walker=cmu_humanoid.CMUHumanoidPositionControlledV2020,
        arena=floors.Floor(size=arena_size),
        ref_path=str(clip_set.hdf5_path),
        ref_steps=settings.ref_steps,
        dataset=clip_set.clip_collection(),
        min_steps=settings.min_steps,
        reward_type=settings.reward_type,
        termination_error_threshold=settings.termination_error_threshold,
        physics_timestep=settings.physics_timestep,
        always_init_at_clip_start=not settings.any_random_start,
        ghost_offset=GHOST_OFFSET if with_ghost else None,
        **task_kwargs,
    )
    # The reference clip fixes the control step; refuse a mismatch instead of
    # silently tracking at the wrong rate.
    if not np.isclose(task.control_timestep, settings.control_timestep):
        raise ValueError(
            f"control_timestep={settings.control_timestep} but the reference clips step at {task.control_timestep} s."
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


def episode_starts(
    task, snippet_index: int | None = None, start_step: int | None = None
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The starts a reset draws from, ``(snippet index, clip step)`` pairs, and their probabilities.

    ``task`` is dm_control's ``MultiClipMocapTracking`` (its ``_possible_starts`` and ``_start_probabilities``).
    With neither argument: the task's own starts. With ``snippet_index``: that snippet's starts (its start alone
    when the task has none of it, as with too short a snippet for random starts). With ``start_step`` as well:
    that one start. A reset still draws from them, so every choice uses the random state alike on both backends.
    The arguments are checked by the environment (:func:`~mocapact_envs.envs.tracking.episode_choice`).
    """
    starts, probabilities = task._possible_starts, np.asarray(task._start_probabilities, np.float64)
    if snippet_index is None:
        return list(starts), probabilities
    if start_step is not None:
        return [(snippet_index, int(start_step))], np.ones(1)
    chosen = [i for i, (clip, _) in enumerate(starts) if clip == snippet_index]
    if not chosen:
        return [(snippet_index, int(task._dataset.start_steps[snippet_index]))], np.ones(1)
    weights = probabilities[chosen]
    return [starts[i] for i in chosen], weights / weights.sum()


class ComposerTrackingBackend:
    """The tracking task as dm_control's composer runs it (``MultiClipMocapTracking``): the reference
    :class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend`.

    Args:
        clip_set: the snippets to track.
        observable_keys: ``walker/...`` observable names.
        settings: the task's settings.
        with_ghost: add dm_control's reference ghost to the model, for rendering.
        seed: seeds ``random_state``; ``None`` seeds from the OS, as composer does.
    """

    #: The ghost is a walker of the model itself: nothing to add to a rendered scene.
    scene_callback = None

    def __init__(
        self,
        clip_set: ClipSet,
        observable_keys: Sequence[str],
        settings: TrackingSettings,
        *,
        with_ghost: bool = False,
        seed: int | None = None,
    ):
        self.environment = build_tracking_environment(
            clip_set, observable_keys, settings, with_ghost=with_ghost, seed=seed
        )
        self._task = self.environment.task
        self._observable_keys = tuple(sorted(observable_keys))

    @property
    def physics(self):
        return self.environment.physics

    @property
    def random_state(self) -> np.random.RandomState:
        return self.environment.random_state

    def action_spec(self):
        return self.environment.action_spec()

    def observation_spec(self):
        return self.environment.observation_spec()

    def control_timestep(self) -> float:
        return self.environment.control_timestep()

    def reset(self, snippet_index: int | None = None, start_step: int | None = None) -> dict[str, np.ndarray]:
        if snippet_index is None:
            return self._observation(self.environment.reset().observation)
        # The task draws its start from these lists (in initialize_episode_mjcf): one snippet's, for this reset.
        task = self._task
        saved = task._possible_starts, task._start_probabilities
        task._possible_starts, task._start_probabilities = episode_starts(task, snippet_index, start_step)
        try:
            return self._observation(self.environment.reset().observation)
        finally:
            task._possible_starts, task._start_probabilities = saved

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool]:
        timestep = self.environment.step(action)
        return self._observation(timestep.observation), timestep.reward, *episode_end_flags(timestep)

    def _observation(self, observation) -> dict[str, np.ndarray]:
        return flat_observation(observation, self._observable_keys)

    def snippet_index(self) -> int:
        return self._task._current_clip_index

    def time_in_clip(self) -> float:
        return float(self._task.get_normalized_time_in_clip(self.environment.physics)[0])

    def last_time_in_clip(self) -> float:
        clip = self._task._current_clip
        return self._task._last_step * clip.dt / clip.duration

    def tracking_error(self) -> float:
        return float(self._task._termination_error)

    def physics_state(self) -> np.ndarray:
        return self.environment.physics.get_state().copy()

    def close(self) -> None:
        self.environment.close()
