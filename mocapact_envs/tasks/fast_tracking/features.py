"""The walker's and the reference's features: where they live in ``MjData`` and in a snippet's table, and
what one evaluation of every world reads (dm_control's ``reference_pose.utils.get_features``, batched).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np


def constant(value: float) -> np.ndarray:
    """A 0-d float64 array: numpy operations take it faster than a Python float, with the same results."""
    return np.array(value, np.float64)


#: The ``MjData`` arrays observations, reward and termination read.
DATA_FIELDS = ("ctrl", "qpos", "qvel", "act", "xpos", "xquat", "xmat", "subtree_com", "subtree_linvel", "sensordata")

#: Reference features kept per snippet step, in this column order: a reset writes ``position,
#: quaternion, joints`` as ``qpos``; the tracking error (``joints, body_positions``) and the reward
#: (``joints_velocity, center_of_mass, appendages``) compare one block with the walker's, laid out
#: alike by :class:`WalkerFeatures`.
REFERENCE_FEATURES = (
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
        for name in REFERENCE_FEATURES:
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


class cached:  # noqa: N801 (a decorator, named like functools.cached_property)
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


class Gather:
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


def row_positions(bodies, width: int) -> np.ndarray:
    """Positions of the rows ``bodies`` of a flattened (nbody, width) array."""
    return (np.asarray(bodies)[:, None] * width + np.arange(width)).reshape(-1)


class WalkerFeatures:
    """Which gathered values make up the walker features, each a slice of one (B, n) array.

    ``pose`` then ``body_positions`` (the tracking error), and ``joints_velocity``,
    ``center_of_mass``, ``appendages`` (the reward) are adjacent, as in the reference table.
    ``appendages`` is computed from ``appendage_xpos``, ``appendage_root_xpos`` (the root's position
    once per appendage, so the subtraction does not broadcast, slow on small arrays) and ``root_xmat``.
    """

    def __init__(self, layout: WalkerLayout, gather: Gather):
        segments = {
            "pose": ("qpos", layout.qpos),
            "body_positions": ("xpos", row_positions(layout.tracking_bodies, 3)),
            "joints_velocity": ("qvel", layout.mocap_dof),
            "center_of_mass": ("subtree_com", np.arange(3)),
            "appendages": ("xpos", np.zeros(3 * len(layout.appendage_bodies), np.int64)),  # Filled in later.
            "body_quaternions": ("xquat", row_positions(layout.tracking_bodies, 4)),
            "appendage_root_xpos": ("xpos", row_positions([layout.root_body] * len(layout.appendage_bodies), 3)),
            "root_xmat": ("xmat", np.arange(9)),
            "appendage_xpos": ("xpos", row_positions(layout.appendage_bodies, 3)),
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
        self.joint_count = constant(self.num_joints)
        self.body_count = constant(self.num_error - self.num_joints)


class Frame:
    """Every world's walker after a step or reset, with the reference rows it is compared to.

    The walker features come from one gather; what only some observables need is computed on
    first use.
    """

    def __init__(
        self,
        layout: WalkerLayout,
        features: WalkerFeatures,
        source: np.ndarray,
        reference: tuple[np.ndarray, np.ndarray],
        columns: dict[str, slice],
        compared_columns: slice,
        previous_pose: np.ndarray,
        control_timestep: float,
        clip_index: np.ndarray,
        time_in_clip: Callable[[], np.ndarray],
    ):
        """``source``: the worlds' gathered state (flat); ``reference``: the reference rows at each world's step and
        ``ref_steps`` ahead; ``columns``: where each feature stands in a reference row; ``previous_pose``: each
        world's pose one control step ago (the control observables' finite differences); ``clip_index`` and
        ``time_in_clip`` (computed only if an observable asks): each world's clip and normalised time in it."""
        self.layout, self.features, self.columns = layout, features, columns
        self.previous_pose, self.control_timestep = previous_pose, control_timestep
        self.clip_index, self.time_in_clip = clip_index, time_in_clip
        self.source = source
        self.walker = walker = source[features.index]
        self.batch = batch = len(walker)
        self.current, self.future = reference
        slices = features.slices
        # Free joint then mocap joints: the pose the control observables compare between steps.
        self.pose = walker[:, slices["pose"]]
        self.root_xmat = walker[:, slices["root_xmat"]].reshape(batch, 3, 3)
        # utils.get_features' appendages: end effectors and head relative to the root, in its frame.
        relative = walker[:, slices["appendage_xpos"]] - walker[:, slices["appendage_root_xpos"]]
        walker[:, slices["appendages"]] = np.matmul(relative.reshape(batch, -1, 3), self.root_xmat).reshape(batch, -1)
        # Walker minus reference over the block the tracking error and the reward compare.
        self.difference = walker[:, features.compared] - self.current[:, compared_columns]

    def feature(self, name: str) -> np.ndarray:
        """A walker feature of every world, flat: (B, dim)."""
        return self.walker[:, self.features.slices[name]]

    def future_reference(self, name: str) -> np.ndarray:
        """The reference feature ``ref_steps`` ahead: (B, K, dim)."""
        return self.future[:, :, self.columns[name]]

    def egocentric(self, vectors: np.ndarray) -> np.ndarray:
        """World-frame vectors (B, ..., 3) in the root frame, as ``transform_vec_to_egocentric_frame``."""
        return np.matmul(vectors.reshape(self.batch, -1, 3), self.root_xmat).reshape(vectors.shape)

    @cached
    def position(self) -> np.ndarray:
        return self.pose[:, :3]

    @cached
    def quaternion(self) -> np.ndarray:
        return self.pose[:, 3:7]

    @cached
    def joints(self) -> np.ndarray:
        return self.pose[:, 7:]

    @cached
    def body_quaternions(self) -> np.ndarray:
        return self.feature("body_quaternions").reshape(self.batch, -1, 4)

    @cached
    def relative_body_positions(self) -> np.ndarray:
        """Reference minus walker body positions at ``ref_steps``: (B, K, bodies, 3)."""
        future = self.future_reference("body_positions").reshape(self.batch, -1, len(self.layout.tracking_bodies), 3)
        return future - self.feature("body_positions").reshape(self.batch, 1, -1, 3)
