"""The fast backend's task: :class:`TrackingWorlds`, MoCapAct's tracking task for a batch of worlds sharing one
compiled model (episode starts, steps and ends; features, observations and rewards in the sibling modules)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import mujoco
import numpy as np

from mocapact_envs.mocap.source import ClipSet
from mocapact_envs.tasks.checks import check_integer, check_number
from mocapact_envs.tasks.composer_tracking import build_tracking_environment, episode_starts
from mocapact_envs.tasks.fast_tracking.features import (
    DATA_FIELDS,
    Frame,
    Gather,
    SnippetReference,
    WalkerFeatures,
    WalkerLayout,
)
from mocapact_envs.tasks.fast_tracking.observations import FUTURE_REFERENCE, WALKER_OBSERVABLES, ObservationLayout
from mocapact_envs.tasks.fast_tracking.rewards import TrackingReward
from mocapact_envs.tasks.tracking_settings import TrackingSettings


def _with_disabled(model: mujoco.MjModel, flag: mujoco.mjtDisableBit) -> mujoco.MjModel:
    """A copy of ``model`` with one more ``opt.disableflags`` bit set."""
    copied = copy.copy(model)
    copied.opt.disableflags |= int(flag)
    return copied


class TrackingWorlds:
    """``num_worlds`` copies of MoCapAct's tracking task on one compiled model, stepped in lockstep.

    Each world has its own ``MjData``, ``np.random.RandomState`` (start choice and, in the
    environments, action noise) and episode. :meth:`reset` starts new episodes in some worlds,
    :meth:`step` advances some, and :meth:`evaluate` gives every world's observation, reward,
    tracking error and episode end as batched arrays.

    Args:
        clip_set: the snippets to track.
        observable_keys: ``walker/...`` observable names.
        settings: the task's settings. ``settings.random_start`` may give one bool per world: a world with
            ``False`` starts every episode at the start of the snippet it draws (snippets weighted as random
            starts weight them, by their number of starts).
        num_worlds: how many copies.
        num_threads: threads stepping the worlds' physics (MuJoCo releases the GIL while it steps);
            1 steps them in the calling thread.
        seed: world ``i``'s random state is seeded with ``seed + i``; ``None`` seeds from the OS.
    """

    def __init__(
        self,
        clip_set: ClipSet,
        observable_keys: Sequence[str],
        settings: TrackingSettings,
        *,
        num_worlds: int = 1,
        num_threads: int = 1,
        seed: int | None = None,
    ):
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be >= 1, got {num_worlds}.")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}.")
        self._random_start = settings.random_start_per_world(num_worlds)
        unknown = sorted({key.split("/", 1)[1] for key in observable_keys} - WALKER_OBSERVABLES)
        if unknown:
            raise ValueError(
                f"the fast backend has no observable(s) {unknown}; it has {', '.join(sorted(WALKER_OBSERVABLES))}."
            )
        # The composer environment is built once: its compiled model, specs, list of starts and
        # reference loader are the task's own.
        self.dm_env = build_tracking_environment(clip_set, observable_keys, settings)
        task = self.dm_env.task
        physics = self.dm_env.physics
        self.clip_set = clip_set
        self.settings = settings
        self.model = copy.copy(physics.model.ptr)
        # Copies that differ in one flag, so no flag is toggled while threads step: the substeps skip
        # sensors (only those of the final mj_forward are observed; the dynamics are bitwise the same),
        # and the reset's forward runs without actuation, as dm_control's after_reset.
        self._substep_model = _with_disabled(self.model, mujoco.mjtDisableBit.mjDSBL_SENSOR)
        #: The model a step's substeps run on (sensors off, the same dynamics): what a planner steps. The worlds' own
        #: object, not a copy: not to be modified.
        self.dynamics_model = self._substep_model
        self._reset_model = _with_disabled(self.model, mujoco.mjtDisableBit.mjDSBL_ACTUATION)
        self.layout = WalkerLayout.from_walker(physics, task._walker)
        self.num_worlds = num_worlds
        self.ref_steps = np.asarray(task._ref_steps)
        self.termination_error_threshold = settings.termination_error_threshold
        self.control_timestep = task.control_timestep
        self.num_substeps = task.physics_steps_per_control_step
        self._loader = task._loader
        self._dataset = task._dataset
        self._max_ref_step = int(task._max_ref_step)
        starts = task._possible_starts
        self._start_clip = np.array([clip for clip, _ in starts])
        self._start_step = np.array([step for _, step in starts])
        # numpy's legacy choice(n, p=p) draws searchsorted(cdf, random_sample(), side="right") with this
        # cdf; reset draws so directly, without choice's checks of p (the same draws, the same state).
        cdf = np.cumsum(task._start_probabilities, dtype=np.float64)
        self._start_cdf = cdf / cdf[-1]
        self._snippets: list[SnippetReference | None] = [None] * len(clip_set.snippets)
        self.columns = columns = self._snippet(0).columns
        self.compared_columns = slice(columns["joints"].start, columns["appendages"].stop)
        # The reference as the walker's qpos and qvel (free joint then mocap joints), which a reset sets.
        self._qpos_columns = slice(columns["position"].start, columns["joints"].stop)
        self._qvel_columns = np.r_[columns["velocity"], columns["angular_velocity"], columns["joints_velocity"]]
        names = {key.split("/", 1)[1] for key in observable_keys}
        self._row_offsets = np.concatenate([[0], self.ref_steps]) if names & FUTURE_REFERENCE else None
        self._needs_subtree_velocity = bool(names & {"torso_xvel", "torso_yvel"})

        self.datas = [mujoco.MjData(self.model) for _ in range(num_worlds)]
        # Views of the MjData arrays read every step: attribute access builds a new view each time.
        self.data_fields = [
            {**{name: getattr(data, name) for name in DATA_FIELDS}, "warnings": data.warning.number}
            for data in self.datas
        ]
        self._all_worlds = range(num_worlds)
        self.random_states = [np.random.RandomState(None if seed is None else seed + i) for i in range(num_worlds)]
        self.gather = Gather(self.layout, self.data_fields)
        self._state_size = self.model.nq + self.model.nv + self.model.na
        self._latest_source = self.gather.source()
        self.walker_features = WalkerFeatures(self.layout, self.gather)
        self.rewards = TrackingReward(
            settings.reward_type, settings.termination_error_threshold, columns, self.walker_features, num_worlds
        )
        spec = self.dm_env.observation_spec()
        self.observation_layout = ObservationLayout(
            sorted(observable_keys),
            {key: int(np.prod(spec[key].shape, dtype=int)) for key in observable_keys},
            self.layout,
            self.gather,
        )
        self.clip_index = np.zeros(num_worlds, np.int64)
        self.time_step = np.zeros(num_worlds, np.int64)
        self.last_step = np.zeros(num_worlds, np.int64)
        self.start_time = np.zeros(num_worlds)
        self.duration = np.ones(num_worlds)
        self.last_time_in_clip = np.zeros(num_worlds)
        self._time_in_clip: np.ndarray | None = None
        # Handover starts (set_start_states): steps and physics states a world may start from instead of the reference.
        self._start_steps: np.ndarray | None = None
        self._start_states: np.ndarray | None = None
        self._start_probability = 0.0
        # Pushes (set_pushes): the force each world's root body feels now and the control steps it has left.
        self._push_settings: tuple[float, float, int] | None = None
        self._push_force = np.zeros((num_worlds, 3))
        self._push_steps_left = np.zeros(num_worlds, np.int64)
        # The walker pose (free joint, mocap joints) the control observables compare with: the one
        # before the last step, and the latest one.
        self.previous_pose = np.zeros((num_worlds, len(self.layout.qpos)))
        self._latest_pose = np.zeros((num_worlds, len(self.layout.qpos)))
        self._num_threads = min(num_threads, num_worlds)
        self._pool = ThreadPoolExecutor(self._num_threads) if self._num_threads > 1 else None

    # -- reference ----------------------------------------------------------------------------

    def _snippet(self, clip_index: int) -> SnippetReference:
        """A snippet's reference, loaded on first use as dm_control's task does."""
        snippet = self._snippets[clip_index]
        if snippet is None:
            trajectory = self._loader.get_trajectory(
                self._dataset.ids[clip_index],
                start_step=self._dataset.start_steps[clip_index],
                end_step=self._dataset.end_steps[clip_index],
                zero_out_velocities=False,
            )
            snippet = self._snippets[clip_index] = SnippetReference.load(trajectory, self._max_ref_step)
        return snippet

    def reference_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Each world's reference row at its step (B, F) and at ``ref_steps`` ahead (B, K, F)."""
        offsets = self._row_offsets
        if offsets is None:  # No observable looks ahead: the current row only.
            if self.num_worlds == 1:  # A view, not a copy: rows are only read.
                return self._snippets[self.clip_index[0]].table[self.time_step[0]][None], None
            if len(self._snippets) == 1:
                return self._snippets[0].table[self.time_step], None
            return np.stack(
                [self._snippets[c].table[t] for c, t in zip(self.clip_index, self.time_step, strict=True)]
            ), None
        if len(self._snippets) == 1:
            rows = self._snippets[0].table[self.time_step[:, None] + offsets]
        else:
            rows = np.stack(
                [self._snippets[c].table[t + offsets] for c, t in zip(self.clip_index, self.time_step, strict=True)]
            )
        return rows[:, 0], rows[:, 1:]

    # -- episodes -----------------------------------------------------------------------------

    def reset(self, worlds: Sequence[int], snippet_index: int | None = None, start_step: int | None = None) -> None:
        """Starts a new episode in each of ``worlds``: a start drawn from its random state as
        ``MultiClipMocapTracking`` draws it, the walker set exactly to the reference pose there.

        ``snippet_index`` draws the start from that snippet's only, ``start_step`` (a clip step) too fixes it
        (:func:`~mocapact_envs.tasks.composer_tracking.episode_starts`; the draw is made all the same, as dm_control's task
        makes it); either skips the handover starts of :meth:`set_start_states`."""
        model, layout = self.model, self.layout
        qpos_columns, qvel_columns = self._qpos_columns, self._qvel_columns
        start_cdf, start_clip, start_step_of = self._start_cdf, self._start_clip, self._start_step
        chosen = snippet_index is not None
        if chosen:
            starts, probabilities = episode_starts(self.dm_env.task, snippet_index, start_step)
            start_clip, start_step_of = np.array([c for c, _ in starts]), np.array([t for _, t in starts])
            start_cdf = np.cumsum(probabilities, dtype=np.float64)
            start_cdf /= start_cdf[-1]
        for world in worlds:
            index = start_cdf.searchsorted(self.random_states[world].random_sample(), side="right")
            clip_index = int(start_clip[index])
            snippet = self._snippet(clip_index)
            time_step = int(start_step_of[index]) - self._dataset.start_steps[clip_index]
            # The draw still chose the snippet, and the stream stays the same.
            if not self._random_start[world] and start_step is None:
                time_step = 0
            self.clip_index[world] = clip_index
            self.time_step[world] = time_step
            self.last_step[world] = snippet.last_step
            self.start_time[world] = time_step * snippet.dt
            self.duration[world] = snippet.duration
            self.last_time_in_clip[world] = snippet.last_step * snippet.dt / snippet.duration
            row = snippet.table[time_step]
            data, fields = self.datas[world], self.data_fields[world]
            mujoco.mj_resetData(model, data)  # Also ends a push: xfrc_applied is zeroed.
            self._push_steps_left[world] = 0
            handover = self._start_states is not None and self._random_start[world] and not chosen
            if handover and self.random_states[world].random_sample() < self._start_probability:
                # A state another policy reached at this step (a relay's previous window), instead of the reference.
                pick = self.random_states[world].randint(len(self._start_states))
                time_step = int(self._start_steps[pick])
                self.time_step[world], self.start_time[world] = time_step, time_step * snippet.dt
                state = self._start_states[pick]
                data.qpos[:], data.qvel[:] = state[: model.nq], state[model.nq : model.nq + model.nv]
                data.act[:] = state[model.nq + model.nv :]
                mujoco.mj_forward(self._reset_model, data)
                self.previous_pose[world] = self._latest_pose[world] = fields["qpos"][layout.qpos]
                continue
            fields["qpos"][layout.qpos] = row[qpos_columns]
            fields["qvel"][layout.qvel] = row[qvel_columns]
            # dm_control's after_reset: mj_forward without actuation.
            mujoco.mj_forward(self._reset_model, data)
            # At a reset the control observables compare the pose with itself.
            self.previous_pose[world] = self._latest_pose[world] = row[qpos_columns]

    def step(self, actions: np.ndarray, worlds: Sequence[int] | None = None) -> None:
        """Advances ``worlds`` (all by default) one control step with ``actions[world]``."""
        if worlds is None:
            worlds = self._all_worlds
            self.previous_pose[:] = self._latest_pose
            self.time_step += 1
        else:
            worlds = np.asarray(worlds, np.int64)
            self.previous_pose[worlds] = self._latest_pose[worlds]
            self.time_step[worlds] += 1
        if self._push_settings is not None:
            self._draw_pushes(worlds)
        if self._pool is None or len(worlds) < 2:
            self._step_physics(actions, worlds)
        else:
            chunks = [worlds[i :: self._num_threads] for i in range(self._num_threads)]
            for _ in self._pool.map(lambda chunk: self._step_physics(actions, chunk), chunks):
                pass

    def set_pushes(self, max_force: float, probability: float, steps: int) -> None:
        """From now on each world's root body is pushed now and then: before a step, a world not being pushed
        starts a push with ``probability``, a horizontal force of a uniform direction and a magnitude uniform in
        ``[0, max_force]`` newtons, held for ``steps`` control steps. A training perturbation (MoCapAct's task has
        none): episodes meet larger departures from the reference than action noise gives. ``max_force`` 0 stops.
        The draws come from each world's own random state, so a seed gives the same pushes."""
        check_number("max_force", max_force, ">= 0 newtons", lambda v: v >= 0)
        check_number("probability", probability, "in [0, 1]", lambda v: 0 <= v <= 1)
        check_integer("steps", steps, 1)
        self._push_settings = (float(max_force), float(probability), int(steps)) if max_force > 0 else None
        self._push_force[:] = 0.0
        self._push_steps_left[:] = 0
        for data in self.datas:
            data.xfrc_applied[:] = 0.0

    def _draw_pushes(self, worlds: Sequence[int]) -> None:
        max_force, probability, steps = self._push_settings
        root = self.layout.root_body
        for world in worlds:
            if self._push_steps_left[world] > 0:
                self._push_steps_left[world] -= 1
            else:
                self._push_force[world] = 0.0
                random_state = self.random_states[world]
                if random_state.random_sample() < probability:
                    angle = random_state.uniform(0.0, 2.0 * np.pi)
                    magnitude = random_state.uniform(0.0, max_force)
                    self._push_force[world, :2] = magnitude * np.cos(angle), magnitude * np.sin(angle)
                    self._push_steps_left[world] = steps - 1
            self.datas[world].xfrc_applied[root, :3] = self._push_force[world]

    def _step_physics(self, actions: np.ndarray, worlds: Sequence[int]) -> None:
        model, substep_model = self.model, self._substep_model
        for world in worlds:
            data, fields = self.datas[world], self.data_fields[world]
            fields["ctrl"][:] = actions[world]
            # legacy_step: the first substep reuses the position and velocity stages of the last forward.
            mujoco.mj_step2(substep_model, data)
            mujoco.mj_step(substep_model, data, self.num_substeps - 1)
            # dm_control's after_step reads a binding of the physics made dirty by ctrl: mj_forward.
            mujoco.mj_forward(model, data)
            if self._needs_subtree_velocity:
                # The walker's after_substep hook; mj_forward leaves subtree_linvel as it is. dm_control
                # does not call it at a reset, where torso_xvel reads 0.
                mujoco.mj_subtreeVel(model, data)
            if np.count_nonzero(fields["warnings"]):  # .any() without its Python overhead.
                from dm_control.rl.control import PhysicsError

                raise PhysicsError(f"the physics of world {world} is invalid: MuJoCo warnings {fields['warnings']}.")

    def evaluate(self, with_reward: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
        """Every world's observations, reward (``None`` without ``with_reward``) and tracking error.

        Observations are float32 views of one new buffer: (B, dim) per key, or (dim,) for one world.
        """
        self._time_in_clip = None  # The worlds have changed since it was computed.
        source = self.gather.source()
        frame = Frame(
            self.layout,
            self.walker_features,
            source,
            self.reference_rows(),
            self.columns,
            self.compared_columns,
            self.previous_pose,
            self.control_timestep,
            self.clip_index,
            self.time_in_clip,
        )
        error = self.rewards.tracking_error(frame)
        observations = self.observation_layout.fill(frame)
        # After the observations: as in dm_control, the reward sees the same walker features.
        reward = self.rewards.reward(frame, error) if with_reward else None
        self._latest_pose[:] = frame.pose
        self._latest_source = frame.source
        return observations, reward, error

    def episode_ends(self, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``terminated`` (tracking error above the threshold) and ``truncated`` (the snippet's last
        trackable step reached otherwise) of every world."""
        terminated = error > self.termination_error_threshold
        return terminated, (self.time_step == self.last_step) & ~terminated

    def time_in_clip(self) -> np.ndarray:
        """Every world's dm_control ``get_normalized_time_in_clip``: (B,).

        As of the last :meth:`evaluate`, computed once (the observation and the info both read it): not
        to be modified.
        """
        if self._time_in_clip is None:
            self._time_in_clip = (self.start_time + np.array([data.time for data in self.datas])) / self.duration
        return self._time_in_clip

    def set_start_states(self, time_steps: np.ndarray, states: np.ndarray, probability: float) -> None:
        """From now on a random-start world's episode starts, with ``probability``, at one of ``states`` (rows of
        :meth:`physics_states`) at its step of ``time_steps`` (counted from the snippet's start) instead of the
        reference pose: a relay window learns from the states its predecessor hands over. One snippet only."""
        time_steps, states = np.asarray(time_steps, np.int64), np.asarray(states, np.float64)
        if len(self._snippets) != 1:
            raise ValueError("start states need worlds of one snippet.")
        if states.ndim != 2 or states.shape[1] != self._state_size or len(states) != len(time_steps) or not len(states):
            raise ValueError(
                f"start states must be (N, {self._state_size}) physics states with N step indices; got "
                f"{states.shape} and {time_steps.shape}."
            )
        last = self._snippet(0).last_step
        if time_steps.min() < 0 or time_steps.max() >= last:
            raise ValueError(
                f"start steps must lie in [0, {last}) of the snippet; got {time_steps.min()}..{time_steps.max()}."
            )
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"the start-state probability must be in [0, 1], got {probability}.")
        self._start_steps, self._start_states, self._start_probability = time_steps, states, float(probability)

    def physics_states(self) -> np.ndarray:
        """Every world's dm_control ``physics.get_state()`` (``qpos, qvel, act``): (B, nq + nv + na).

        Read from the values the last :meth:`evaluate` gathered (the worlds change only in :meth:`step`
        and :meth:`reset`, each followed by an evaluation): a view of them, not of ``MjData``.
        """
        # The gathered MjData values start with qpos, qvel and act in each world.
        return self._latest_source.reshape(self.num_worlds, -1)[:, : self._state_size]

    def reference_trajectory(self, clip_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A snippet's reference at every step as the walker's ``qpos`` and ``qvel``: what a reset there sets
        (``(last_step + 1 + max ref step, nq)`` and ``(..., nv)``)."""
        table = self._snippet(clip_index).table
        # The model holds the walker only, in MuJoCo's own order: these are MjData's qpos and qvel columns too.
        assert np.array_equal(self.layout.qpos, np.arange(self.model.nq)), "the walker is not the whole model"
        assert np.array_equal(self.layout.qvel, np.arange(self.model.nv)), "the walker is not the whole model"
        return table[:, self._qpos_columns], table[:, self._qvel_columns]

    def reference_qpos(self, world: int) -> np.ndarray:
        """The reference pose at ``world``'s current step, as a walker ``qpos``."""
        return self._snippet(int(self.clip_index[world])).table[self.time_step[world], self._qpos_columns]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self.dm_env is not None:
            self.dm_env.close()
            self.dm_env = None
