"""MoCapAct's tracking task stepped with the ``mujoco`` bindings and vectorised numpy.

dm_control's ``MultiClipMocapTracking`` (:mod:`mocapact_envs.tasks.tracking`) spends most of a
step in Python (composer hooks, observable callables, bindings) and recompiles the MJCF model at
every reset. :class:`TrackingWorlds` runs the same task on the ``mujoco.MjModel`` compiled by that
environment, built once, for a batch of worlds sharing the model: reference features are
precomputed per snippet, and features, observations, reward and termination are numpy over the
batch. :class:`FastTrackingEnvironment` is one world behind the ``dm_env`` interface that
:class:`~mocapact_envs.dm_control_env.DmControlEnv` adapts.

Parity with dm_control holds step for step, because the MuJoCo calls are the same:

* Step: composer writes ``ctrl`` through a binding (marking the physics dirty), then runs
  ``legacy_step`` substeps (``mj_step2``, ``mj_step1``, then the walker's ``mj_subtreeVel``), and the
  task's ``after_step`` reads a binding of the dirty physics, which runs ``mj_forward``. Here:
  ``mj_step2``, ``mj_step`` for the other substeps and ``mj_forward``: bitwise the same ``MjData``.
  The substeps skip sensors, which do not act on the dynamics and are observed only after the
  final ``mj_forward``.
* Reset: ``mj_resetData``, the reference pose, then ``mj_forward`` with actuation disabled
  (dm_control's ``after_reset``).
* Start: ``random_state.choice(len(possible_starts), p=start_probabilities)`` over the task's own
  list of starts, drawn as numpy's legacy ``choice`` draws it (one ``random_sample`` searched in the
  normalised cumulative probabilities), so a seed gives the same episodes in both backends.
* Features and observables: the formulas of ``reference_pose.tracking``, ``utils.get_features``,
  ``rewards`` and the walker's observables, batched; dm_control's own quaternion helpers where
  they accept batches.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dm_env
import mujoco
import numpy as np

from mocapact_envs.mocap.source import ClipSet
from mocapact_envs.tasks.tracking import GHOST_OFFSET, build_tracking_environment


def _constant(value: float) -> np.ndarray:
    """A 0-d float64 array: numpy operations take it faster than a Python float, with the same results."""
    return np.array(value, np.float64)


#: dm_control's constants for the CMU humanoid's observables and quaternion helpers.
_TORQUE_THRESHOLD = 60.0  # cmu_humanoid._TORQUE_THRESHOLD
_TORQUE_SCALE = _constant(2 / _TORQUE_THRESHOLD)  # sensors_torque is tanh(2 torque / threshold).
_TOUCH_THRESHOLD = _constant(1e-3)  # legacy_base._TOUCH_THRESHOLD
_QUAT_TOL = 1e-10  # transformations._TOL
_ONE, _HALF = _constant(1.0), _constant(0.5)

#: The ``MjData`` arrays observations, reward and termination read.
_DATA_FIELDS = ("ctrl", "qpos", "qvel", "act", "xpos", "xquat", "xmat", "subtree_com", "subtree_linvel", "sensordata")

#: Reward names of dm_control's ``reference_pose.rewards``.
REWARD_TYPES = ("comic", "termination_reward", "multi_term_pose_reward")

#: Reference features kept per snippet step, in this column order: a reset writes ``position,
#: quaternion, joints`` as ``qpos``; the tracking error (``joints, body_positions``) and the reward
#: (``joints_velocity, center_of_mass, appendages``) compare one block with the walker's, laid out
#: alike by :class:`_WalkerFeatures`.
_REFERENCE_FEATURES = (
    "position",
    "quaternion",
    "joints",
    "body_positions",
    "joints_velocity",
    "center_of_mass",
    "appendages",
    "velocity",
    "angular_velocity",
    "body_quaternions",
    "unit_body_quaternions",
    "ego_bodies_quats",
)


@dataclasses.dataclass(frozen=True)
class WalkerLayout:
    """Where the walker's quantities live in ``MjData``, read from dm_control's bindings."""

    qpos: np.ndarray
    """Free joint then mocap joints: the order of a reference ``qpos``."""
    qvel: np.ndarray
    mocap_qpos: np.ndarray
    mocap_dof: np.ndarray
    observable_qpos: np.ndarray
    """Actuated joints in actuator (alphabetical) order, as ``joints_pos`` shows them."""
    observable_dof: np.ndarray
    mocap_to_observable: np.ndarray
    act: np.ndarray
    frame_body: int
    """The attachment frame holding the free joint; its ``subtree_com`` is the walker's CoM."""
    root_body: int
    head_body: int
    tracking_bodies: np.ndarray
    appendage_bodies: np.ndarray
    """End effectors then head, as ``appendages_pos``."""
    sensors: dict[str, np.ndarray]
    """``sensordata`` indices of each walker sensor group."""

    @classmethod
    def from_walker(cls, physics, walker) -> WalkerLayout:
        from dm_control import mjcf

        model = physics.model

        def sensor_indices(elements) -> np.ndarray:
            ids = np.atleast_1d(physics.bind(elements).element_id)
            return np.concatenate(
                [np.arange(model.sensor_adr[i], model.sensor_adr[i] + model.sensor_dim[i]) for i in ids]
            )

        frame = mjcf.get_attachment_frame(walker.mjcf_model)
        free = physics.bind(frame.freejoint)
        free_qpos = np.arange(free.qposadr, free.qposadr + 7)
        free_dof = np.arange(free.dofadr, free.dofadr + 6)
        mocap = physics.bind(walker.mocap_joints)
        observable = physics.bind(walker.observable_joints)
        actuator_ids = physics.bind(walker.actuators).element_id
        sensor = walker.mjcf_model.sensor
        return cls(
            qpos=np.concatenate([free_qpos, mocap.qposadr]),
            qvel=np.concatenate([free_dof, mocap.dofadr]),
            mocap_qpos=np.array(mocap.qposadr),
            mocap_dof=np.array(mocap.dofadr),
            observable_qpos=np.array(observable.qposadr),
            observable_dof=np.array(observable.dofadr),
            mocap_to_observable=np.array(walker.mocap_to_observable_joint_order),
            act=np.array(model.actuator_actadr[actuator_ids]),
            frame_body=int(physics.bind(frame).element_id),
            root_body=int(physics.bind(walker.root_body).element_id),
            head_body=int(physics.bind(walker.head).element_id),
            tracking_bodies=np.array(physics.bind(walker.mocap_tracking_bodies).element_id),
            appendage_bodies=np.array(physics.bind(walker.end_effectors + (walker.head,)).element_id),
            sensors={
                "velocimeter": sensor_indices(sensor.velocimeter),
                "gyro": sensor_indices(sensor.gyro),
                "accelerometer": sensor_indices(sensor.accelerometer),
                "torque": sensor_indices(sensor.torque),
                "touch": sensor_indices(sensor.touch),
                "end_effectors": sensor_indices(walker.end_effectors_pos_sensors),
            },
        )


@dataclasses.dataclass(frozen=True)
class SnippetReference:
    """One snippet's reference features, one row per step, packed as ``table[:, columns[name]]``."""

    table: np.ndarray
    columns: dict[str, slice]
    dt: float
    duration: float
    last_step: int
    """The step at which an episode is truncated: ``len - max(ref_steps) - 1``."""

    @classmethod
    def load(cls, trajectory, max_ref_step: int) -> SnippetReference:
        from dm_control.utils import transformations as tr

        features = {key.split("/", 1)[1]: value for key, value in trajectory.as_dict().items()}
        num_steps = len(features["joints"])
        # dm_control caches these per step on first use; they depend on the reference only.
        features["ego_bodies_quats"] = tr.quat_diff(features["quaternion"][:, None], features["body_quaternions"])
        quaternions = features["body_quaternions"]
        features["unit_body_quaternions"] = quaternions / np.linalg.norm(quaternions, axis=-1, keepdims=True)
        columns, blocks, start = {}, [], 0
        for name in _REFERENCE_FEATURES:
            block = np.asarray(features[name], np.float64).reshape(num_steps, -1)
            columns[name] = slice(start, start + block.shape[1])
            blocks.append(block)
            start += block.shape[1]
        return cls(
            table=np.concatenate(blocks, axis=1),
            columns=columns,
            dt=trajectory.dt,
            duration=trajectory.duration,
            last_step=num_steps - max_ref_step - 1,
        )


def _with_disabled(model: mujoco.MjModel, flag: mujoco.mjtDisableBit) -> mujoco.MjModel:
    """A copy of ``model`` with one more ``opt.disableflags`` bit set."""
    copied = copy.copy(model)
    copied.opt.disableflags |= int(flag)
    return copied


def _quat_to_axisangle(quat: np.ndarray) -> np.ndarray:
    """dm_control's ``transformations.quat_to_axisangle`` over a batch of quaternions (B, 4)."""
    angle = 2 * np.arccos(np.clip(quat[:, 0], -1.0, 1.0))
    small = angle < _QUAT_TOL
    half_sin = np.where(small, 1.0, np.sin(angle / 2))
    wrapped = (angle + np.pi) % (2 * np.pi) - np.pi
    axis_angle = quat[:, 1:4] / half_sin[:, None] * wrapped[:, None]
    axis_angle[small] = 0.0
    return axis_angle


def _quat_to_rotation(quat: np.ndarray) -> np.ndarray:
    """dm_control's ``transformations.quat_to_mat(quat)[:3, :3]`` over a batch (B, 4)."""
    norm2 = np.einsum("bi,bi->b", quat, quat)
    q = quat * np.sqrt(2.0 / np.where(norm2 < _QUAT_TOL, 1.0, norm2))[:, None]
    q = q[:, :, None] * q[:, None, :]
    rotation = np.stack(
        [
            1.0 - q[:, 2, 2] - q[:, 3, 3],
            q[:, 1, 2] - q[:, 3, 0],
            q[:, 1, 3] + q[:, 2, 0],
            q[:, 1, 2] + q[:, 3, 0],
            1.0 - q[:, 1, 1] - q[:, 3, 3],
            q[:, 2, 3] - q[:, 1, 0],
            q[:, 1, 3] - q[:, 2, 0],
            q[:, 2, 3] + q[:, 1, 0],
            1.0 - q[:, 1, 1] - q[:, 2, 2],
        ],
        axis=1,
    ).reshape(-1, 3, 3)
    rotation[norm2 < _QUAT_TOL] = np.eye(3)
    return rotation


class _cached:  # noqa: N801 (a decorator, named like functools.cached_property)
    """``functools.cached_property`` without its lock (Python 3.11 takes one on every first access)."""

    def __init__(self, compute):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


class _Gather:
    """Every world's ``MjData`` arrays the task reads, concatenated into one vector per evaluation.

    ``SOURCES`` are whole arrays or one row of them; :meth:`indices` turns positions in a flattened
    source into positions in that vector, world by world, so one indexing gathers any set of values
    from every world at once.
    """

    #: ``(MjData field, WalkerLayout attribute of the row read, or None for the whole array)``.
    SOURCES = (
        ("qpos", None),
        ("qvel", None),
        ("act", None),
        ("sensordata", None),
        ("xpos", None),
        ("xquat", None),
        ("xmat", "root_body"),
        ("subtree_com", "frame_body"),
        ("subtree_linvel", "root_body"),
    )

    def __init__(self, layout: WalkerLayout, data_fields: Sequence[dict[str, np.ndarray]]):
        self.offsets: dict[str, int] = {}
        self.size = 0
        views = []
        for fields in data_fields:
            for field, row in self.SOURCES:
                view = fields[field] if row is None else fields[field][getattr(layout, row)]
                views.append(view.reshape(-1))
                if len(self.offsets) < len(self.SOURCES):
                    self.offsets[field] = self.size
                    self.size += view.size
        # Views (not copies) of MjData, so the concatenation reads the current state.
        assert not any(view.flags.owndata for view in views)
        self._views = views
        self.num_worlds = len(data_fields)

    def source(self) -> np.ndarray:
        return np.concatenate(self._views)

    def indices(self, field: str, positions) -> np.ndarray:
        """Indices into :meth:`source` of ``positions`` of a flattened source, for every world: (B, n)."""
        positions = self.offsets[field] + np.asarray(positions, np.int64).reshape(-1)
        return np.arange(self.num_worlds)[:, None] * self.size + positions


def _body_positions(bodies, width: int) -> np.ndarray:
    """Positions of the rows ``bodies`` of a flattened (nbody, width) array."""
    return (np.asarray(bodies)[:, None] * width + np.arange(width)).reshape(-1)


class _WalkerFeatures:
    """Which gathered values make up the walker features, each a slice of one (B, n) array.

    ``pose`` then ``body_positions`` (the tracking error), and ``joints_velocity``,
    ``center_of_mass``, ``appendages`` (the reward) are adjacent, as in the reference table.
    ``appendages`` is computed from ``appendage_xpos``, ``appendage_root_xpos`` (the root's position
    once per appendage, so the subtraction does not broadcast, slow on small arrays) and ``root_xmat``.
    """

    def __init__(self, layout: WalkerLayout, gather: _Gather):
        segments = {
            "pose": ("qpos", layout.qpos),
            "body_positions": ("xpos", _body_positions(layout.tracking_bodies, 3)),
            "joints_velocity": ("qvel", layout.mocap_dof),
            "center_of_mass": ("subtree_com", np.arange(3)),
            "appendages": ("xpos", np.zeros(3 * len(layout.appendage_bodies), np.int64)),  # Filled in later.
            "body_quaternions": ("xquat", _body_positions(layout.tracking_bodies, 4)),
            "appendage_root_xpos": ("xpos", _body_positions([layout.root_body] * len(layout.appendage_bodies), 3)),
            "root_xmat": ("xmat", np.arange(9)),
            "appendage_xpos": ("xpos", _body_positions(layout.appendage_bodies, 3)),
            "torque": ("sensordata", layout.sensors["torque"]),
            "touch": ("sensordata", layout.sensors["touch"]),
        }
        self.slices: dict[str, slice] = {}
        parts, start = [], 0
        for name, (field, positions) in segments.items():
            part = gather.indices(field, positions)
            self.slices[name] = slice(start, start + part.shape[1])
            parts.append(part)
            start += part.shape[1]
        # (B, width): indexing the gathered vector with it gives the walker features of every world.
        self.index = np.concatenate(parts, axis=1)
        self.width = start
        # Compared with the reference in one block: joints and body positions (the tracking error),
        # then joint velocities, centre of mass and appendages (the reward).
        self.compared = slice(self.slices["pose"].start + 7, self.slices["appendages"].stop)
        self.num_joints = len(layout.mocap_qpos)
        self.num_error = self.slices["body_positions"].stop - self.compared.start
        self.joint_count = _constant(self.num_joints)
        self.body_count = _constant(self.num_error - self.num_joints)


class _Frame:
    """Every world's walker after a step or reset, with the reference rows it is compared to.

    The walker features come from one gather; what only some observables need is computed on
    first use.
    """

    def __init__(self, worlds: TrackingWorlds):
        self.worlds = worlds
        self.layout = worlds.layout
        self.batch = batch = worlds.num_worlds
        features = worlds.walker_features
        self.source = source = worlds.gather.source()
        self.walker = walker = source[features.index]
        self.current, self.future = worlds._reference_rows()
        slices = features.slices
        # Free joint then mocap joints: the pose the control observables compare between steps.
        self.pose = walker[:, slices["pose"]]
        self.root_xmat = walker[:, slices["root_xmat"]].reshape(batch, 3, 3)
        # utils.get_features' appendages: end effectors and head relative to the root, in its frame.
        relative = walker[:, slices["appendage_xpos"]] - walker[:, slices["appendage_root_xpos"]]
        walker[:, slices["appendages"]] = np.matmul(relative.reshape(batch, -1, 3), self.root_xmat).reshape(batch, -1)
        # Walker minus reference over the block the tracking error and the reward compare.
        self.difference = walker[:, features.compared] - self.current[:, worlds.compared_columns]

    def feature(self, name: str) -> np.ndarray:
        """A walker feature of every world, flat: (B, dim)."""
        return self.walker[:, self.worlds.walker_features.slices[name]]

    def future_reference(self, name: str) -> np.ndarray:
        """The reference feature ``ref_steps`` ahead: (B, K, dim)."""
        return self.future[:, :, self.worlds.columns[name]]

    def egocentric(self, vectors: np.ndarray) -> np.ndarray:
        """World-frame vectors (B, ..., 3) in the root frame, as ``transform_vec_to_egocentric_frame``."""
        return np.matmul(vectors.reshape(self.batch, -1, 3), self.root_xmat).reshape(vectors.shape)

    @_cached
    def position(self) -> np.ndarray:
        return self.pose[:, :3]

    @_cached
    def quaternion(self) -> np.ndarray:
        return self.pose[:, 3:7]

    @_cached
    def joints(self) -> np.ndarray:
        return self.pose[:, 7:]

    @_cached
    def body_quaternions(self) -> np.ndarray:
        return self.feature("body_quaternions").reshape(self.batch, -1, 4)

    @_cached
    def relative_body_positions(self) -> np.ndarray:
        """Reference minus walker body positions at ``ref_steps``: (B, K, bodies, 3)."""
        future = self.future_reference("body_positions").reshape(self.batch, -1, len(self.layout.tracking_bodies), 3)
        return future - self.feature("body_positions").reshape(self.batch, 1, -1, 3)

    def tracking_error(self) -> np.ndarray:
        """dm_control's termination error: ``0.5 * mean |body error| + 0.5 * mean |joint error|``."""
        worlds = self.worlds
        features = worlds.walker_features
        error = np.abs(self.difference[:, : features.num_error])
        # np.add.reduce / n is np.mean's own arithmetic (the same bits), without its Python overhead;
        # halving is exact, so 0.5 * (b + j) is dm_control's 0.5 * b + 0.5 * j bit for bit.
        joints = np.add.reduce(error[:, : features.num_joints], axis=1) / features.joint_count
        bodies = np.add.reduce(error[:, features.num_joints :], axis=1) / features.body_count
        return _HALF * (bodies + joints)

    def reward(self, tracking_error: np.ndarray) -> np.ndarray:
        """dm_control's ``reference_pose.rewards`` reward, batched."""
        worlds = self.worlds
        if worlds.reward_type == "termination_reward":
            return 1 - tracking_error / worlds.termination_error_threshold
        # Joint velocities, centre of mass and appendages: one block against one of the reference.
        difference = self.difference[:, worlds.walker_features.num_error :]
        distances = np.empty((self.batch, len(_POSE_REWARD_SCALES)))
        np.add.reduceat(np.square(difference), worlds.reward_block_starts, axis=1, out=distances[:, :-1])
        # rewards.bounded_quat_dist is 0.5 * arccos(2 <q, r>^2 - 1) for unit q, r: arccos |<q, r>|.
        # MuJoCo's xquat is unit; the reference's are normalised when a snippet is loaded.
        reference_quats = self.current[:, worlds.unit_quaternion_columns].reshape(self.body_quaternions.shape)
        cosine = np.abs(np.add.reduce(self.body_quaternions * reference_quats, axis=2))
        angle = np.arccos(np.minimum(_ONE, cosine))
        np.add.reduce(angle * angle, axis=1, out=distances[:, -1])
        # 0.1 exp(-10 d_com) + exp(-0.1 d_jointvel) + 0.15 exp(-40 d_appendages) + 0.65 exp(-2 d_quat).
        pose = np.exp(distances * worlds.pose_reward_scales) @ worlds.pose_reward_weights
        if worlds.reward_type == "multi_term_pose_reward":
            return pose
        # comic: 0.5 * (1 - error / threshold) + 0.5 * pose, the 0.5 folded into the weights.
        return (_HALF - tracking_error * worlds.comic_error_scale) + pose


#: ``multi_term_pose_reward``'s terms in the order of ``TrackingWorlds.reward_block_starts``
#: (joint velocities, centre of mass, appendages) and then body quaternions.
_POSE_REWARD_SCALES = np.array([-0.1, -10.0, -40.0, -2.0])
_POSE_REWARD_WEIGHTS = np.array([1.0, 0.1, 0.15, 0.65])


def _quat_diff(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """dm_control's ``transformations.quat_diff``, which broadcasts over leading axes."""
    from dm_control.utils import transformations as tr

    return tr.quat_diff(source, target)


def _sensor(group: str, component: int | None = None):
    def read(layout: WalkerLayout) -> tuple[str, np.ndarray]:
        indices = layout.sensors[group]
        return "sensordata", indices if component is None else indices[component : component + 1]

    return read


#: Observables copied straight from ``MjData``: for a WalkerLayout, the gathered source and the
#: positions in it (``xmat`` and ``subtree_linvel`` hold the root's row only).
_DIRECT_OBSERVABLES: dict[str, Any] = {
    "actuator_activation": lambda layout: ("act", layout.act),
    "body_height": lambda layout: ("xpos", [3 * layout.root_body + 2]),
    "end_effectors_pos": _sensor("end_effectors"),
    "joints_pos": lambda layout: ("qpos", layout.observable_qpos),
    "joints_vel": lambda layout: ("qvel", layout.observable_dof),
    "sensors_accelerometer": _sensor("accelerometer"),
    "sensors_gyro": _sensor("gyro"),
    "sensors_velocimeter": _sensor("velocimeter"),
    "world_zaxis": lambda layout: ("xmat", [6, 7, 8]),
    "gyro_backward_roll": _sensor("gyro", 0),
    "gyro_rightward_roll": _sensor("gyro", 1),
    "gyro_anticlockwise_spin": _sensor("gyro", 2),
    "veloc_forward": _sensor("velocimeter", 0),
    "veloc_strafe": _sensor("velocimeter", 1),
    "veloc_up": _sensor("velocimeter", 2),
    "head_height": lambda layout: ("xpos", [3 * layout.head_body + 2]),
    "orientation": lambda layout: ("xmat", np.arange(9)),
    "position": lambda layout: ("xpos", _body_positions([layout.root_body], 3)),
    "torso_xvel": lambda layout: ("subtree_linvel", [0]),
    "torso_yvel": lambda layout: ("subtree_linvel", [1]),
}


def _computed_observables() -> dict[str, Any]:
    """Observables computed from a :class:`_Frame`, each (B, ...) with B the leading axis."""

    def velocimeter_control(frame):
        worlds = frame.worlds
        rotation_previous = _quat_to_rotation(worlds.previous_pose[:, 3:7])
        velocity = (frame.position - worlds.previous_pose[:, :3]) / worlds.control_timestep
        return np.einsum("bi,bij->bj", velocity, rotation_previous)

    def gyro_control(frame):
        worlds = frame.worlds
        difference = _quat_diff(worlds.previous_pose[:, 3:7], frame.quaternion)
        difference /= np.linalg.norm(difference, axis=1, keepdims=True)
        return _quat_to_axisangle(difference) / worlds.control_timestep

    def joints_vel_control(frame):
        worlds = frame.worlds
        difference = frame.joints - worlds.previous_pose[:, 7:]
        return difference[:, frame.layout.mocap_to_observable] / worlds.control_timestep

    def reference_rel_joints(frame):
        difference = frame.future_reference("joints") - frame.joints[:, None]
        return difference[:, :, frame.layout.mocap_to_observable]

    def reference_rel_bodies_quats(frame):
        bodies = frame.body_quaternions
        future = frame.future_reference("body_quaternions").reshape(frame.batch, -1, *bodies.shape[1:])
        return _quat_diff(bodies[:, None], future)

    return {
        "sensors_torque": lambda f: np.tanh(f.feature("torque") * _TORQUE_SCALE),
        "sensors_touch": lambda f: f.feature("touch") > _TOUCH_THRESHOLD,
        "appendages_pos": lambda f: f.feature("appendages"),
        "time_in_clip": lambda f: f.worlds.time_in_clip(),
        "clip_id": lambda f: f.worlds.clip_index,
        "velocimeter_control": velocimeter_control,
        "gyro_control": gyro_control,
        "joints_vel_control": joints_vel_control,
        "reference_rel_joints": reference_rel_joints,
        "reference_rel_bodies_pos_global": lambda f: f.relative_body_positions,
        "reference_rel_bodies_quats": reference_rel_bodies_quats,
        "reference_rel_bodies_pos_local": lambda f: f.egocentric(f.relative_body_positions),
        "reference_ego_bodies_quats": lambda f: f.future_reference("ego_bodies_quats"),
        "reference_rel_root_quat": lambda f: _quat_diff(f.quaternion[:, None], f.future_reference("quaternion")),
        "reference_rel_root_pos_local": lambda f: f.egocentric(f.future_reference("position") - f.position[:, None]),
        "reference_appendages_pos": lambda f: f.future_reference("appendages"),
    }


_COMPUTED_OBSERVABLES = _computed_observables()
#: Every walker observable the fast backend computes, by its name after ``walker/``.
WALKER_OBSERVABLES = frozenset(_DIRECT_OBSERVABLES) | frozenset(_COMPUTED_OBSERVABLES)
_FUTURE_REFERENCE = frozenset(name for name in WALKER_OBSERVABLES if name.startswith("reference_"))


class _ObservationLayout:
    """Where each observable goes in the one float32 buffer an evaluation fills.

    The buffer holds each key's (B, dim) block contiguously, so each observation is a view. The
    direct observables' blocks come first, one run copied with one indexing of the gathered
    ``MjData`` values; the computed ones follow. The observations are returned in key order.
    """

    def __init__(self, keys: Sequence[str], dims: dict[str, int], layout: WalkerLayout, gather: _Gather):
        self.keys = tuple(keys)
        self.batch = batch = gather.num_worlds
        names = {key: key.split("/", 1)[1] for key in self.keys}
        direct = [key for key in self.keys if names[key] in _DIRECT_OBSERVABLES]
        computed = [key for key in self.keys if names[key] in _COMPUTED_OBSERVABLES]
        blocks, start = {}, 0
        for key in direct + computed:
            blocks[key] = slice(start, start + batch * dims[key])
            start += batch * dims[key]
        self.size = start
        self.num_direct = sum(batch * dims[key] for key in direct)
        self.source_indices = np.concatenate(
            [np.zeros(0, np.int64)]
            + [gather.indices(*_DIRECT_OBSERVABLES[names[key]](layout)).reshape(-1) for key in direct]
        )
        self.computed = [(blocks[key], _COMPUTED_OBSERVABLES[names[key]]) for key in computed]
        #: Each key's block and the shape of its view, in key order.
        self.views = [(key, blocks[key], (dims[key],) if batch == 1 else (batch, dims[key])) for key in self.keys]

    def fill(self, frame: _Frame) -> dict[str, np.ndarray]:
        """A new buffer of every world's observations, as a view per key: (B, dim), or (dim,) for one world."""
        buffer = np.empty(self.size, np.float32)
        buffer[: self.num_direct] = frame.source[self.source_indices]
        for block, compute in self.computed:
            buffer[block] = compute(frame).reshape(-1)
        if self.batch == 1:  # The blocks are the views.
            return {key: buffer[block] for key, block, _ in self.views}
        return {key: buffer[block].reshape(shape) for key, block, shape in self.views}


class TrackingWorlds:
    """``num_worlds`` copies of MoCapAct's tracking task on one compiled model, stepped in lockstep.

    Each world has its own ``MjData``, ``np.random.RandomState`` (start choice and, in the
    environments, action noise) and episode. :meth:`reset` starts new episodes in some worlds,
    :meth:`step` advances some, and :meth:`evaluate` gives every world's observation, reward,
    tracking error and episode end as batched arrays.

    Args:
        clip_set: the snippets to track.
        observable_keys: ``walker/...`` observable names.
        num_worlds: how many copies.
        random_start: as :class:`~mocapact_envs.tracking_env.MocapTrackingEnv`, or one bool per world: a world
            with ``False`` starts every episode at the start of the snippet it draws (snippets weighted as
            random starts weight them, by their number of starts).
        ref_steps, min_steps, termination_error_threshold, reward_type, physics_timestep, control_timestep: as
            :class:`~mocapact_envs.tracking_env.MocapTrackingEnv`.
        num_threads: threads stepping the worlds' physics (MuJoCo releases the GIL while it steps);
            1 steps them in the calling thread.
        seed: world ``i``'s random state is seeded with ``seed + i``; ``None`` seeds from the OS.
    """

    def __init__(
        self,
        clip_set: ClipSet,
        observable_keys: Sequence[str],
        *,
        num_worlds: int = 1,
        ref_steps: Sequence[int] = (0,),
        random_start: bool | Sequence[bool] = True,
        min_steps: int = 10,
        termination_error_threshold: float = 0.3,
        reward_type: str = "comic",
        physics_timestep: float = 0.005,
        control_timestep: float = 0.03,
        num_threads: int = 1,
        seed: int | None = None,
    ):
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"unknown reward_type {reward_type!r}; choose one of {', '.join(REWARD_TYPES)}.")
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be >= 1, got {num_worlds}.")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}.")
        world_random_start = np.asarray(random_start)
        if world_random_start.dtype != bool or world_random_start.shape not in ((), (num_worlds,)):
            raise ValueError(
                f"random_start must be a bool or {num_worlds} bools (one per world), got {random_start!r}."
            )
        self._random_start = np.broadcast_to(world_random_start, (num_worlds,))
        unknown = sorted({key.split("/", 1)[1] for key in observable_keys} - WALKER_OBSERVABLES)
        if unknown:
            raise ValueError(
                f"the fast backend has no observable(s) {unknown}; it has {', '.join(sorted(WALKER_OBSERVABLES))}."
            )
        # The composer environment is built once: its compiled model, specs, list of starts and
        # reference loader are the task's own.
        self.dm_env = build_tracking_environment(
            clip_set,
            observable_keys,
            ref_steps=ref_steps,
            random_start=bool(self._random_start.any()),
            min_steps=min_steps,
            termination_error_threshold=termination_error_threshold,
            reward_type=reward_type,
            physics_timestep=physics_timestep,
            control_timestep=control_timestep,
        )
        task = self.dm_env.task
        physics = self.dm_env.physics
        self.clip_set = clip_set
        self.model = copy.copy(physics.model.ptr)
        # Copies that differ in one flag, so no flag is toggled while threads step: the substeps skip
        # sensors (only those of the final mj_forward are observed; the dynamics are bitwise the same),
        # and the reset's forward runs without actuation, as dm_control's after_reset.
        self._substep_model = _with_disabled(self.model, mujoco.mjtDisableBit.mjDSBL_SENSOR)
        self._reset_model = _with_disabled(self.model, mujoco.mjtDisableBit.mjDSBL_ACTUATION)
        self.layout = WalkerLayout.from_walker(physics, task._walker)
        self.num_worlds = num_worlds
        self.ref_steps = np.asarray(task._ref_steps)
        self.termination_error_threshold = termination_error_threshold
        self.reward_type = reward_type
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
        self.unit_quaternion_columns = columns["unit_body_quaternions"]
        # Where joint velocities, centre of mass and appendages start in the reward's part of the block.
        self.reward_block_starts = np.array([0, columns["center_of_mass"].start, columns["appendages"].start])
        self.reward_block_starts[1:] -= columns["joints_velocity"].start
        self.pose_reward_weights = _POSE_REWARD_WEIGHTS * (0.5 if reward_type == "comic" else 1.0)
        # One row per world: multiplying arrays of the same shape is faster than broadcasting.
        self.pose_reward_scales = np.tile(_POSE_REWARD_SCALES, (num_worlds, 1))
        self.comic_error_scale = _constant(0.5 / termination_error_threshold)
        names = {key.split("/", 1)[1] for key in observable_keys}
        self._row_offsets = np.concatenate([[0], self.ref_steps]) if names & _FUTURE_REFERENCE else None
        self._needs_subtree_velocity = bool(names & {"torso_xvel", "torso_yvel"})

        self.datas = [mujoco.MjData(self.model) for _ in range(num_worlds)]
        # Views of the MjData arrays read every step: attribute access builds a new view each time.
        self.data_fields = [
            {**{name: getattr(data, name) for name in _DATA_FIELDS}, "warnings": data.warning.number}
            for data in self.datas
        ]
        self._all_worlds = range(num_worlds)
        self.random_states = [np.random.RandomState(None if seed is None else seed + i) for i in range(num_worlds)]
        self.gather = _Gather(self.layout, self.data_fields)
        self._state_size = self.model.nq + self.model.nv + self.model.na
        self._latest_source = self.gather.source()
        self.walker_features = _WalkerFeatures(self.layout, self.gather)
        spec = self.dm_env.observation_spec()
        self.observation_layout = _ObservationLayout(
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

    def _reference_rows(self) -> tuple[np.ndarray, np.ndarray]:
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

    def reset(self, worlds: Sequence[int]) -> None:
        """Starts a new episode in each of ``worlds``: a start drawn from its random state as
        ``MultiClipMocapTracking`` draws it, the walker set exactly to the reference pose there."""
        model, layout = self.model, self.layout
        qpos_columns, qvel_columns = self._qpos_columns, self._qvel_columns
        for world in worlds:
            index = self._start_cdf.searchsorted(self.random_states[world].random_sample(), side="right")
            clip_index = int(self._start_clip[index])
            snippet = self._snippet(clip_index)
            time_step = int(self._start_step[index]) - self._dataset.start_steps[clip_index]
            if not self._random_start[world]:  # The draw still chose the snippet, and the stream stays the same.
                time_step = 0
            self.clip_index[world] = clip_index
            self.time_step[world] = time_step
            self.last_step[world] = snippet.last_step
            self.start_time[world] = time_step * snippet.dt
            self.duration[world] = snippet.duration
            self.last_time_in_clip[world] = snippet.last_step * snippet.dt / snippet.duration
            row = snippet.table[time_step]
            data, fields = self.datas[world], self.data_fields[world]
            mujoco.mj_resetData(model, data)
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
        if self._pool is None or len(worlds) < 2:
            self._step_physics(actions, worlds)
        else:
            chunks = [worlds[i :: self._num_threads] for i in range(self._num_threads)]
            for _ in self._pool.map(lambda chunk: self._step_physics(actions, chunk), chunks):
                pass

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
        frame = _Frame(self)
        error = frame.tracking_error()
        observations = self.observation_layout.fill(frame)
        # After the observations: as in dm_control, the reward sees the same walker features.
        reward = frame.reward(error) if with_reward else None
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

    def physics_states(self) -> np.ndarray:
        """Every world's dm_control ``physics.get_state()`` (``qpos, qvel, act``): (B, nq + nv + na).

        Read from the values the last :meth:`evaluate` gathered (the worlds change only in :meth:`step`
        and :meth:`reset`, each followed by an evaluation): a view of them, not of ``MjData``.
        """
        # The gathered MjData values start with qpos, qvel and act in each world.
        return self._latest_source.reshape(self.num_worlds, -1)[:, : self._state_size]

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


class FastTrackingEnvironment:
    """One :class:`TrackingWorlds` world behind the ``dm_env`` interface of a composer environment.

    ``reset`` and ``step`` return ``dm_env.TimeStep`` s as dm_control's environment does (discount 0
    on termination, 1 at the snippet's end), so :class:`~mocapact_envs.dm_control_env.DmControlEnv`
    adapts either. ``physics`` is a dm_control ``mjcf.Physics`` over this world's ``MjData`` for
    rendering and inspection; the environment steps the ``MjData`` directly.

    Args:
        clip_set, observable_keys: as :class:`TrackingWorlds`.
        with_ghost: draw the reference ghost when rendering.
        seed: seeds ``random_state``; ``None`` seeds from the OS, as composer does.
        task_kwargs: :class:`TrackingWorlds` task arguments.
    """

    #: dm_control raises this when the initial pose does not match the reference (a proto/walker mismatch).
    MAX_INITIAL_ERROR = 1e-2

    def __init__(
        self,
        clip_set: ClipSet,
        observable_keys: Sequence[str],
        *,
        with_ghost: bool = False,
        seed: int | None = None,
        **task_kwargs: Any,
    ):
        from dm_control import mjcf
        from dm_control.mujoco import wrapper

        self.worlds = TrackingWorlds(clip_set, observable_keys, num_worlds=1, seed=seed, **task_kwargs)
        # Built before any episode: dm_control's Physics runs a forward pass on the data it wraps.
        self.physics = mjcf.Physics(wrapper.MjData(self.worlds.datas[0]))
        self._ghost = ReferenceGhost(self.worlds.model) if with_ghost else None
        self._tracking_error = 0.0
        self._snippet_index = 0
        self._last_time_in_clip = 0.0
        self._needs_reset = True

    @property
    def random_state(self) -> np.random.RandomState:
        return self.worlds.random_states[0]

    def action_spec(self):
        return self.worlds.dm_env.action_spec()

    def observation_spec(self):
        return self.worlds.dm_env.observation_spec()

    def control_timestep(self) -> float:
        return self.worlds.control_timestep

    def reset(self) -> dm_env.TimeStep:
        worlds = self.worlds
        worlds.reset((0,))
        self._needs_reset = False
        observation, _, error = worlds.evaluate(with_reward=False)
        self._tracking_error = float(error[0])
        self._snippet_index = int(worlds.clip_index[0])
        self._last_time_in_clip = float(worlds.last_time_in_clip[0])
        if self._tracking_error > self.MAX_INITIAL_ERROR:
            raise ValueError(
                f"the tracking error at the start of snippet {self.worlds.clip_set.snippets[self.snippet_index()].id} "
                f"is {self._tracking_error:.3g} > {self.MAX_INITIAL_ERROR}: the reference does not fit the walker."
            )
        return dm_env.restart(observation)

    def step(self, action: np.ndarray) -> dm_env.TimeStep:
        if self._needs_reset:
            return self.reset()
        observation, reward, terminated, truncated = self.advance(action)
        if terminated:
            return dm_env.termination(reward, observation)
        if truncated:
            return dm_env.truncation(reward, observation)
        return dm_env.transition(reward, observation)

    @property
    def needs_reset(self) -> bool:
        """Whether the episode has ended (or not started): :meth:`step` then resets instead."""
        return self._needs_reset

    def end_episode(self) -> None:
        """Ends the episode after a step that failed part way (its physics is no longer the task's)."""
        self._needs_reset = True

    def advance(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], np.float64, bool, bool]:
        """One step of a running episode: observation, reward, ``terminated`` and ``truncated``.

        What :meth:`step` returns without building a ``dm_env.TimeStep``, for callers that want the flags.
        """
        worlds = self.worlds
        worlds.step(action[None])
        observation, reward, error = worlds.evaluate()
        self._tracking_error = error = float(error[0])
        terminated = error > worlds.termination_error_threshold
        truncated = not terminated and bool(worlds.time_step[0] == worlds.last_step[0])
        self._needs_reset = terminated or truncated
        return observation, reward[0], terminated, truncated

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

    def scene_callback(self, physics, scene: mujoco.MjvScene) -> None:
        """Adds the reference ghost at the current step to a scene being rendered."""
        if self._ghost is not None:
            self._ghost.set_pose(self.worlds.reference_qpos(0))
            self._ghost.add_to_scene(physics, scene)
