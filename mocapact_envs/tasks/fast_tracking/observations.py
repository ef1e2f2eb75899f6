"""The walker's observables, batched: which ``MjData`` values each copies or how it is computed, and
where each goes in the one buffer an evaluation fills (dm_control's CMU humanoid observables and
``reference_pose.tracking``'s reference observables).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mocapact_envs.tasks.fast_tracking.features import Frame, Gather, WalkerLayout, constant, row_positions

#: dm_control's constants for the CMU humanoid's observables and quaternion helpers.
_TORQUE_THRESHOLD = 60.0  # cmu_humanoid._TORQUE_THRESHOLD
_TORQUE_SCALE = constant(2 / _TORQUE_THRESHOLD)  # sensors_torque is tanh(2 torque / threshold).
_TOUCH_THRESHOLD = constant(1e-3)  # legacy_base._TOUCH_THRESHOLD
_QUAT_TOL = 1e-10  # transformations._TOL


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
    "position": lambda layout: ("xpos", row_positions([layout.root_body], 3)),
    "torso_xvel": lambda layout: ("subtree_linvel", [0]),
    "torso_yvel": lambda layout: ("subtree_linvel", [1]),
}


def _computed_observables() -> dict[str, Any]:
    """Observables computed from a :class:`_Frame`, each (B, ...) with B the leading axis."""

    def velocimeter_control(frame):
        rotation_previous = _quat_to_rotation(frame.previous_pose[:, 3:7])
        velocity = (frame.position - frame.previous_pose[:, :3]) / frame.control_timestep
        return np.einsum("bi,bij->bj", velocity, rotation_previous)

    def gyro_control(frame):
        difference = _quat_diff(frame.previous_pose[:, 3:7], frame.quaternion)
        difference /= np.linalg.norm(difference, axis=1, keepdims=True)
        return _quat_to_axisangle(difference) / frame.control_timestep

    def joints_vel_control(frame):
        difference = frame.joints - frame.previous_pose[:, 7:]
        return difference[:, frame.layout.mocap_to_observable] / frame.control_timestep

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
        "time_in_clip": lambda f: f.time_in_clip(),
        "clip_id": lambda f: f.clip_index,
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
#: Observables that show reference steps ahead (``ref_steps``).
FUTURE_REFERENCE = frozenset(name for name in WALKER_OBSERVABLES if name.startswith("reference_"))


class ObservationLayout:
    """Where each observable goes in the one float32 buffer an evaluation fills.

    The buffer holds each key's (B, dim) block contiguously, so each observation is a view. The
    direct observables' blocks come first, one run copied with one indexing of the gathered
    ``MjData`` values; the computed ones follow. The observations are returned in key order.
    """

    def __init__(self, keys: Sequence[str], dims: dict[str, int], layout: WalkerLayout, gather: Gather):
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

    def fill(self, frame: Frame) -> dict[str, np.ndarray]:
        """A new buffer of every world's observations, as a view per key: (B, dim), or (dim,) for one world."""
        buffer = np.empty(self.size, np.float32)
        buffer[: self.num_direct] = frame.source[self.source_indices]
        for block, compute in self.computed:
            buffer[block] = compute(frame).reshape(-1)
        if self.batch == 1:  # The blocks are the views.
            return {key: buffer[block] for key, block, _ in self.views}
        return {key: buffer[block].reshape(shape) for key, block, shape in self.views}
