"""Converts CMU ``.amc`` clips into dm_control's reference-trajectory HDF5 layout.

The conversion follows the facts dm_control's own tools establish:
``dm_control.suite.utils.parse_amc`` reads the 62 AMC channels onto the 56 hinge
joints of the CMU humanoid and resamples them from 120 Hz to the control step;
the locomotion walker ``CMUHumanoidPositionControlledV2020`` shares those joint
names, axes and order but is the suite body scaled by 1.2, so root position and
root linear velocity are scaled by the same factor. The per-step pose features
(body positions, quaternions, end effectors, ...) are read off the walker with
``dm_control.locomotion.tasks.reference_pose.utils.get_features``, exactly as the
tracking task reads them off the simulated walker.

Converted clips approximate DeepMind's marker-fitted 2020 clips: same motions and
durations, slightly different poses.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

#: The 2020 walker is the suite's CMU body scaled by this factor.
V2020_SCALE = 1.2
#: MoCapAct's and dm_control's 2020 clips step at 0.03 s.
DEFAULT_DT = 0.03
#: ``mocap_pb2.Walker.Model.CMU_2020``.
CMU_2020_MODEL_ENUM = 4
#: Bump when the conversion changes, so cached files are rebuilt.
CONVERTER_VERSION = 1

WALKER_POSE_FIELDS = (
    "position",
    "quaternion",
    "joints",
    "center_of_mass",
    "end_effectors",
    "velocity",
    "angular_velocity",
    "joints_velocity",
    "appendages",
    "body_positions",
    "body_quaternions",
)


@dataclass
class ConvertedClip:
    """One clip in reference format: each field has shape (num_steps, ...)."""

    clip_id: str
    dt: float
    features: dict[str, np.ndarray]
    joint_range_violation: float
    """Share of joint values outside the V2020 walker's joint ranges."""

    @property
    def num_steps(self) -> int:
        return len(self.features["joints"])

    @property
    def duration(self) -> float:
        return (self.num_steps - 1) * self.dt


def _renumbered_amc_text(path: Path) -> str:
    """AMC text with frames renumbered from 1.

    ``parse_amc`` expects the first frame to be numbered 1; files cropped by
    redistributors keep their original numbers (16_22.amc starts at frame 10).
    """
    lines = path.read_text(errors="replace").splitlines()
    out = []
    frame = 0
    for line in lines:
        if re.fullmatch(r"\s*\d+\s*", line):
            frame += 1
            out.append(str(frame))
        else:
            out.append(line.strip())
    if frame == 0:
        raise ValueError(f"{path} holds no AMC frames (no line with a frame number).")
    return "\n".join(out) + "\n"


@functools.cache
def _suite_physics():
    from dm_control.suite import humanoid_CMU

    return humanoid_CMU.Physics.from_xml_string(*humanoid_CMU.get_model_and_assets())


class WalkerPoser:
    """A compiled V2020 walker on a floor, posed from (qpos, qvel) or reference features."""

    def __init__(self):
        from dm_control import mjcf
        from dm_control.locomotion.arenas import floors
        from dm_control.locomotion.tasks.reference_pose import utils
        from dm_control.locomotion.walkers import cmu_humanoid

        arena = floors.Floor()
        self.walker = utils.add_walker(cmu_humanoid.CMUHumanoidPositionControlledV2020, arena)
        self.physics = mjcf.Physics.from_mjcf_model(arena.mjcf_model)
        joints = self.physics.bind(self.walker.mocap_joints)
        self.joint_range = np.array(joints.range)
        self._utils = utils

    def features(self, qpos: np.ndarray, qvel: np.ndarray) -> dict[str, np.ndarray]:
        self._utils.set_walker(self.physics, self.walker, qpos, qvel)
        self.physics.forward()
        return self._utils.get_features(self.physics, self.walker)

    def set_features(self, features: dict[str, np.ndarray]) -> None:
        """Poses the walker as one step of reference features (a kinematic replay)."""
        self._utils.set_walker_from_features(self.physics, self.walker, features)
        self.physics.forward()


@functools.cache
def _walker_poser() -> WalkerPoser:
    return WalkerPoser()


def convert_amc(path: str | Path, clip_id: str, dt: float = DEFAULT_DT) -> ConvertedClip:
    """Converts one ``.amc`` file into reference features for the V2020 walker."""
    from dm_control.suite.utils import parse_amc

    path = Path(path)
    with tempfile.NamedTemporaryFile("w", suffix=".amc", delete=False) as tmp:
        tmp.write(_renumbered_amc_text(path))
    try:
        converted = parse_amc.convert(tmp.name, _suite_physics(), dt)
    finally:
        os.unlink(tmp.name)

    qpos = np.array(converted.qpos, dtype=np.float64).T  # (T, 63)
    qvel = np.array(converted.qvel, dtype=np.float64).T  # (T - 1, 62): finite differences
    if len(qpos) < 2:
        raise ValueError(f"{path} is too short to convert: {len(qpos)} step(s) at dt={dt}.")
    qvel = np.concatenate([qvel, qvel[-1:]], axis=0)  # the last step keeps the last velocity
    qpos[:, :3] *= V2020_SCALE
    qvel[:, :3] *= V2020_SCALE

    poser = _walker_poser()
    steps = [poser.features(p, v) for p, v in zip(qpos, qvel, strict=True)]
    features = {name: np.stack([s[name] for s in steps]) for name in WALKER_POSE_FIELDS}
    joints = qpos[:, 7:]
    low, high = poser.joint_range[:, 0], poser.joint_range[:, 1]
    violation = float(np.mean((joints < low) | (joints > high)))
    return ConvertedClip(clip_id=clip_id, dt=dt, features=features, joint_range_violation=violation)


def write_clip(h5: h5py.File, clip: ConvertedClip) -> None:
    """Writes one clip as a group in dm_control's ``HDF5TrajectoryLoader`` layout."""
    group = h5.create_group(clip.clip_id)
    group.attrs["num_steps"] = clip.num_steps
    group.attrs["dt"] = clip.dt
    group.create_group("props")
    walker = group.create_group("walkers/walker_0")
    walker.attrs["name"] = np.bytes_(b"CMU_2020")
    walker.attrs["model"] = CMU_2020_MODEL_ENUM
    walker.attrs["mass"] = 0.0
    walker.attrs["end_effector_names"] = np.array([], dtype="S1")
    walker.attrs["appendage_names"] = np.array([], dtype="S1")
    walker.attrs["joint_range_violation"] = clip.joint_range_violation
    walker.create_group("scaling")
    walker.create_group("markers")
    for name, values in clip.features.items():
        # dm_control stores each field as (dim, T).
        walker.create_dataset(name, data=values.reshape(clip.num_steps, -1).T)
