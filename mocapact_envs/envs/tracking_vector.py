"""``MocapTracking`` as a native Gymnasium vector environment: N worlds stepped with batched numpy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from dm_control.rl.control import PhysicsError
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from mocapact_envs.envs.dm_control_adapter import (
    SerializableEnv,
    action_space_from_spec,
    check_act_noise,
    invalid_action_error,
    observation_space_from_spec,
)
from mocapact_envs.envs.factory import check_num_envs
from mocapact_envs.envs.tracking import episode_choice, reference_source
from mocapact_envs.tasks.checks import check_integer
from mocapact_envs.tasks.fast_tracking.worlds import TrackingWorlds
from mocapact_envs.tasks.observables import resolve_observables
from mocapact_envs.tasks.tracking_settings import TrackingSettings, load_clip_set, render_fps


class MocapTrackingVectorEnv(SerializableEnv, gym.vector.VectorEnv):
    """``num_envs`` copies of :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv` (fast backend) in one
    process, sharing one compiled model; features, observations and rewards are batched numpy.

    Made by ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` for every
    ``mocapact/MocapTracking-*`` id.

    Action space:
        ``Box(-1, 1, (num_envs, 56), float32)``; each row as the single environment's action, with
        the same ``act_noise``, drawn from that world's random state.

    Observation space:
        The single environment's ``Dict`` batched as ``gymnasium.vector.utils.batch_space`` does:
        each key a float32 ``Box`` of shape ``(num_envs, dim)``.

    Reward, episode end and info:
        As :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv`, one entry per world. ``info`` is
        a dict of arrays (``time_in_clip``, ``start_time_in_clip``, ``last_time_in_clip``,
        ``snippet_index`` (int64; ids in ``snippet_ids``), ``tracking_error``, ``physics_state``), each with a
        boolean ``_key`` mask of the worlds it reports, as Gymnasium's vector environments give them.

    Autoreset:
        ``AutoresetMode.NEXT_STEP``: the step after a world's episode ends resets that world (its
        action is ignored) and returns its first observation with reward 0 and neither flag set.

    Seeding:
        ``reset(seed=s)`` seeds world ``i`` with ``s + i`` (or ``seed[i]`` for a list), so world ``i``
        runs the episodes of a ``MocapTrackingEnv`` reset with seed ``s + i`` under the same actions.

    Args:
        num_envs: number of worlds.
        num_threads: threads stepping the worlds' physics; MuJoCo releases the GIL while it steps,
            so 2 pays only with 2 free cores and several worlds.
        backend: only ``"fast"``; vectorise the ``"dm_control"`` backend with ``"sync"`` or ``"async"``.
        random_start: as :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv`, or ``num_envs`` bools: worlds
            with ``False`` always start at a snippet's start (training can mix both kinds of episode).
        clips, mocap_path, observables, ref_steps, min_steps,
        termination_error_threshold, act_noise, physics_timestep, control_timestep, reward_type,
        skip_missing_clips, strict, reference_digest: as :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv`;
            ``metadata["reference_source"]`` and ``self.settings`` too.
        render_mode: only ``None``; render a single environment instead.

    Version history:
        * v0: as :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv` v0; ``step()`` before ``reset()`` or
          after a step that raised raises ``RuntimeError``, NaN actions name their worlds, ``reset()`` options
          other than ``reset_mask``, ``snippet`` and ``start_step`` are refused by name; ``info["snippet_index"]``
          (int64) instead of the strings of ``info["snippet_id"]``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        clips: str | Sequence[str] = "CMU_016_22",
        *,
        mocap_path: str | Path | None = None,
        observables: str | Sequence[str] = "time_index",
        ref_steps: Sequence[int] = TrackingSettings.ref_steps,
        random_start: bool | Sequence[bool] = TrackingSettings.random_start,
        min_steps: int = TrackingSettings.min_steps,
        termination_error_threshold: float = TrackingSettings.termination_error_threshold,
        act_noise: float = 0.0,
        physics_timestep: float = TrackingSettings.physics_timestep,
        control_timestep: float = TrackingSettings.control_timestep,
        reward_type: str = TrackingSettings.reward_type,
        skip_missing_clips: bool = False,
        strict: bool = False,
        render_mode: str | None = None,
        backend: str = "fast",
        num_threads: int = 1,
        reference_digest: str | None = None,
    ):
        if backend != "fast":
            raise ValueError(
                f"the native vector env runs backend 'fast' only, got {backend!r}; vectorise the "
                "'dm_control' backend with vectorization_mode='sync' or 'async'."
            )
        if render_mode is not None:
            raise ValueError(f"the native vector env does not render (render_mode={render_mode!r}); choose None.")
        num_envs = check_num_envs(num_envs)
        num_threads = check_integer("num_threads", num_threads, 1)
        act_noise = check_act_noise(act_noise)
        self.settings = TrackingSettings(
            ref_steps=ref_steps,
            random_start=random_start,
            min_steps=min_steps,
            termination_error_threshold=termination_error_threshold,
            reward_type=reward_type,
            physics_timestep=physics_timestep,
            control_timestep=control_timestep,
        )
        self.clip_set = load_clip_set(clips, mocap_path, skip_missing_clips=skip_missing_clips, strict=strict)
        observable_keys = resolve_observables(observables)
        self.num_envs = num_envs
        self.act_noise = act_noise
        self.render_mode = None
        self._worlds = TrackingWorlds(
            self.clip_set, observable_keys, self.settings, num_worlds=num_envs, num_threads=num_threads
        )
        dm_env = self._worlds.dm_env
        self.reference_source = reference_source(self.clip_set, mocap_path, reference_digest)
        self.metadata = {
            **self.metadata,
            "render_fps": render_fps(dm_env.control_timestep()),
            "reference_source": self.reference_source,
        }
        self.single_action_space = action_space_from_spec(dm_env.action_spec())
        self.single_observation_space = observation_space_from_spec(dm_env.observation_spec(), observable_keys)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        #: The id of each snippet of the clip set: ``info["snippet_index"]`` indexes it.
        self.snippet_ids = tuple(snippet.id for snippet in self.clip_set.snippets)
        self._start_time_in_clip = np.zeros(num_envs)
        self._tracking_error = np.zeros(num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._all_worlds = np.ones(num_envs, dtype=bool)
        # Until the first reset, and after a step MuJoCo rejected: reset() must come before step().
        self._needs_reset = True

    @property
    def random_states(self) -> list[np.random.RandomState]:
        """Each world's random state: episode starts and action noise draw from it."""
        return self._worlds.random_states

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Resets every world, or those of ``options["reset_mask"]`` (a boolean array); ``options["snippet"]`` and
        ``options["start_step"]`` choose the episode of every world reset, as
        :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv`'s reset options do."""
        choice = episode_choice(self, self.clip_set, self.settings, options, other_options=("reset_mask",))
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be an int or {self.num_envs} seeds, got {len(seeds)}.")
            for random_state, world_seed in zip(self._worlds.random_states, seeds, strict=True):
                if world_seed is not None:
                    random_state.seed(world_seed)
        mask = np.ones(self.num_envs, bool) if not options or "reset_mask" not in options else options["reset_mask"]
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != bool:
            raise ValueError(f"options['reset_mask'] must be a boolean array of shape ({self.num_envs},).")
        worlds = np.flatnonzero(mask)
        self._worlds.reset(worlds, *choice)
        observation, _, error = self._worlds.evaluate(with_reward=False)
        self._tracking_error[worlds] = error[worlds]
        self._start_time_in_clip[worlds] = self._worlds.time_in_clip()[worlds]
        self._autoreset[worlds] = False
        if mask.all():
            self._needs_reset = False
        return observation, self._infos(mask)

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError(
                "MocapTrackingVectorEnv.step() called before reset(), or after a step that raised: call reset() "
                "to start every world's episode."
            )
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"actions must have shape {self.action_space.shape}, got {actions.shape}.")
        original_actions = actions
        # Next-step autoreset: the worlds whose episode ended at the last step only reset.
        resetting = np.flatnonzero(self._autoreset) if self._autoreset.any() else None
        stepping = None if resetting is None else np.flatnonzero(~self._autoreset)
        if self.act_noise > 0:
            noise = np.zeros_like(actions)
            for world in range(self.num_envs) if stepping is None else stepping:
                noise[world] = self._worlds.random_states[world].normal(scale=self.act_noise, size=actions.shape[1])
            actions = actions + noise
        actions = np.minimum(np.maximum(actions, self.single_action_space.low), self.single_action_space.high)
        try:
            self._worlds.step(actions, stepping)
        except PhysicsError as error:
            self._needs_reset = True
            bad_worlds = np.flatnonzero(np.isnan(original_actions).any(axis=1))
            if not len(bad_worlds):
                raise
            message = str(invalid_action_error(original_actions[bad_worlds[0]]))
            message = message.replace("call reset()", "call reset() on the vector env")
            raise ValueError(f"actions of world(s) {bad_worlds.tolist()}: {message}") from error
        if resetting is not None:
            self._worlds.reset(resetting)
        observation, reward, error = self._worlds.evaluate()
        terminated, truncated = self._worlds.episode_ends(error)
        self._tracking_error[:] = error
        if resetting is not None:
            self._start_time_in_clip[resetting] = self._worlds.time_in_clip()[resetting]
            reward[resetting] = 0.0
            terminated[resetting] = truncated[resetting] = False
        self._autoreset = terminated | truncated
        return observation, reward, terminated, truncated, self._infos(self._all_worlds)

    def _infos(self, mask: np.ndarray) -> dict[str, Any]:
        """:class:`MocapTrackingEnv`'s info of every world, as a vector env's dict of arrays and masks."""
        worlds = self._worlds
        info = {
            "time_in_clip": worlds.time_in_clip(),
            "start_time_in_clip": self._start_time_in_clip.copy(),
            "last_time_in_clip": worlds.last_time_in_clip.copy(),
            "snippet_index": worlds.clip_index.copy(),
            "tracking_error": self._tracking_error.copy(),
            "physics_state": worlds.physics_states(),
        }
        masks = {f"_{key}": mask.copy() for key in info}
        return {**info, **masks}

    def physics_states(self) -> np.ndarray:
        """Every world's MuJoCo ``qpos, qvel, act`` now (``info["physics_state"]`` of the last step or reset):
        ``(num_envs, nq + nv + na)``, for controllers that act on the simulation's state."""
        return self._worlds.physics_states().copy()

    def set_start_states(self, time_steps: np.ndarray, physics_states: np.ndarray, probability: float) -> None:
        """Random-start episodes begin, with ``probability``, at one of ``physics_states`` (``info["physics_state"]``
        rows another policy reached) at its step of ``time_steps`` instead of the reference pose; see
        :meth:`~mocapact_envs.tasks.fast_tracking.worlds.TrackingWorlds.set_start_states`."""
        self._worlds.set_start_states(time_steps, physics_states, probability)

    def set_pushes(self, max_force: float, probability: float, steps: int) -> None:
        """Training pushes on the root body (a horizontal force up to ``max_force`` newtons held for ``steps``
        control steps, started with ``probability`` before a step); see
        :meth:`~mocapact_envs.tasks.fast_tracking.worlds.TrackingWorlds.set_pushes`."""
        self._worlds.set_pushes(max_force, probability, steps)

    def close_extras(self, **kwargs: Any) -> None:
        self._worlds.close()
