"""The fast backend: one world of :class:`~mocapact_envs.tasks.fast_tracking.worlds.TrackingWorlds` behind the
:class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend` interface, and the reference ghost it renders."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import mujoco
import numpy as np

from mocapact_envs.mocap.source import ClipSet
from mocapact_envs.tasks.composer_tracking import GHOST_OFFSET
from mocapact_envs.tasks.fast_tracking.worlds import TrackingWorlds
from mocapact_envs.tasks.tracking_settings import TrackingSettings


class ReferenceGhost:
    """The reference pose drawn as dm_control's grey ghost, from a model of its own.

    The ghost is a walker built as dm_control's ``utils.add_walker(..., ghost=True)`` builds it (grey,
    no contacts, no actuators) in an empty arena. Its geoms are added to the scene at render time
    with ``mjv_addGeoms``, so the simulated model is the walker's alone.
    """

    def __init__(self, scene_model: mujoco.MjModel, offset: Sequence[float] = GHOST_OFFSET):
        from dm_control import composer, mjcf
        from dm_control.locomotion.tasks.reference_pose import utils
        from dm_control.locomotion.walkers import cmu_humanoid

        arena = composer.Arena()
        walker = utils.add_walker(cmu_humanoid.CMUHumanoidPositionControlledV2020, arena, name="ghost", ghost=True)
        physics = mjcf.Physics.from_mjcf_model(arena.mjcf_model)
        freejoint = physics.bind(mjcf.get_attachment_frame(walker.mjcf_model).freejoint)
        self._qpos = np.concatenate(
            [np.arange(freejoint.qposadr, freejoint.qposadr + 7), physics.bind(walker.mocap_joints).qposadr]
        )
        self._offset = np.asarray(offset, np.float64)
        self.model = copy.copy(physics.model.ptr)
        self.data = mujoco.MjData(self.model)
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        # The scene is drawn with the walker model's materials: the ghost's "ghost/self" is its "walker/self".
        material_ids = {scene_model.material(i).name: i for i in range(scene_model.nmat)}
        self._material_ids = [
            material_ids.get("walker/" + self.model.material(i).name.split("/", 1)[-1], -1)
            for i in range(self.model.nmat)
        ]

    def set_pose(self, qpos: np.ndarray) -> None:
        """Poses the ghost at a walker ``qpos`` (free joint then mocap joints), shifted by the offset."""
        self.data.qpos[self._qpos] = qpos
        self.data.qpos[self._qpos[:3]] += self._offset
        mujoco.mj_kinematics(self.model, self.data)

    def add_to_scene(self, physics, scene: mujoco.MjvScene) -> None:
        """A dm_control ``scene_callback``: appends the ghost's geoms to the rendered scene."""
        del physics  # The scene already holds the walker's geoms.
        first = scene.ngeom
        mujoco.mjv_addGeoms(self.model, self.data, self._option, self._perturb, mujoco.mjtCatBit.mjCAT_DYNAMIC, scene)
        for index in range(first, scene.ngeom):
            geom = scene.geoms[index]
            if geom.matid >= 0:
                geom.matid = self._material_ids[geom.matid]


class FastTrackingBackend:
    """One :class:`~mocapact_envs.tasks.fast_tracking.worlds.TrackingWorlds` world as a
    :class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend`: what ``MocapTrackingEnv(backend="fast")``
    steps.

    ``physics`` is a dm_control ``mjcf.Physics`` over this world's ``MjData`` for rendering and
    inspection; the backend steps the ``MjData`` directly.

    Args:
        clip_set, observable_keys, settings: as :class:`~mocapact_envs.tasks.fast_tracking.worlds.TrackingWorlds`.
        with_ghost: draw the reference ghost when rendering.
        seed: seeds ``random_state``; ``None`` seeds from the OS, as composer does.
    """

    #: dm_control raises this when the initial pose does not match the reference (a proto/walker mismatch).
    MAX_INITIAL_ERROR = 1e-2

    def __init__(
        self,
        clip_set: ClipSet,
        observable_keys: Sequence[str],
        settings: TrackingSettings,
        *,
        with_ghost: bool = False,
        seed: int | None = None,
    ):
        from dm_control import mjcf
        from dm_control.mujoco import wrapper

        self.worlds = TrackingWorlds(clip_set, observable_keys, settings, num_worlds=1, seed=seed)
        # Built before any episode: dm_control's Physics runs a forward pass on the data it wraps.
        self.physics = mjcf.Physics(wrapper.MjData(self.worlds.datas[0]))
        self._ghost = ReferenceGhost(self.worlds.model) if with_ghost else None
        self.scene_callback = self._draw_ghost if with_ghost else None
        self._tracking_error = 0.0
        self._snippet_index = 0
        self._last_time_in_clip = 0.0

    @property
    def random_state(self) -> np.random.RandomState:
        return self.worlds.random_states[0]

    def action_spec(self):
        return self.worlds.dm_env.action_spec()

    def observation_spec(self):
        return self.worlds.dm_env.observation_spec()

    def control_timestep(self) -> float:
        return self.worlds.control_timestep

    def reset(self, snippet_index: int | None = None, start_step: int | None = None) -> dict[str, np.ndarray]:
        worlds = self.worlds
        worlds.reset((0,), snippet_index, start_step)
        observation, _, error = worlds.evaluate(with_reward=False)
        self._tracking_error = float(error[0])
        self._snippet_index = int(worlds.clip_index[0])
        self._last_time_in_clip = float(worlds.last_time_in_clip[0])
        if self._tracking_error > self.MAX_INITIAL_ERROR:
            raise ValueError(
                f"the tracking error at the start of snippet {self.worlds.clip_set.snippets[self.snippet_index()].id} "
                f"is {self._tracking_error:.3g} > {self.MAX_INITIAL_ERROR}: the reference does not fit the walker."
            )
        return observation

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], np.float64, bool, bool]:
        worlds = self.worlds
        worlds.step(action[None])
        observation, reward, error = worlds.evaluate()
        self._tracking_error = float(error[0])
        terminated, truncated = worlds.episode_ends(error)
        return observation, reward[0], bool(terminated[0]), bool(truncated[0])

    def close(self) -> None:
        self.worlds.close()

    # -- what MocapTrackingEnv's info reports ---------------------------------------------------

    def snippet_index(self) -> int:
        return self._snippet_index

    def time_in_clip(self) -> float:
        return float(self.worlds.time_in_clip()[0])

    def last_time_in_clip(self) -> float:
        return self._last_time_in_clip

    def tracking_error(self) -> float:
        return self._tracking_error

    def physics_state(self) -> np.ndarray:
        return self.worlds.physics_states()[0]

    # -- rendering ------------------------------------------------------------------------------

    def _draw_ghost(self, physics, scene: mujoco.MjvScene) -> None:
        """Adds the reference ghost at the current step to a scene being rendered."""
        self._ghost.set_pose(self.worlds.reference_qpos(0))
        self._ghost.add_to_scene(physics, scene)
