"""Converts CMU ``.amc`` clips into dm_control's reference-trajectory HDF5 layout.

The conversion follows the facts dm_control's own tools establish:
``dm_control.suite.utils.parse_amc`` reads the 62 AMC channels onto the 56 hinge
joints of the CMU humanoid and resamples them from 120 Hz to the control step;
the locomotion walker ``CMUHumanoidPositionControlledV2020`` shares those joint
names, axes and order. The root translation is then fitted to the walker
(:mod:`mocapact_envs.mocap.retarget`): scaled by the walker's leg length over the
subject's (from the subject's ASF file) and raised or lowered, smoothly per step,
so the walker stands on the floor; joint angles are kept. The per-step pose features
(body positions, quaternions, end effectors, ...) are read off the walker with
``dm_control.locomotion.tasks.reference_pose.utils.get_features``, exactly as the
tracking task reads them off the simulated walker.

Converted clips approximate DeepMind's marker-fitted 2020 clips: same motions and
durations, slightly different poses.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import mujoco
import numpy as np

from mocapact_envs.mocap import retarget
from mocapact_envs.mocap.retarget import ClipQuality

#: MoCapAct's and dm_control's 2020 clips step at 0.03 s.
DEFAULT_DT = 0.03
#: ``mocap_pb2.Walker.Model.CMU_2020``.
CMU_2020_MODEL_ENUM = 4
#: Bump when the conversion changes, so cached files are rebuilt.
CONVERTER_VERSION = 4

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
    quality: ClipQuality

    @property
    def num_steps(self) -> int:
        return len(self.features["joints"])

    @property
    def duration(self) -> float:
        return (self.num_steps - 1) * self.dt


#: An AMC line that starts a frame: the frame number alone.
FRAME_NUMBER_LINE = re.compile(r"\s*\d+\s*")


class AMCFileError(ValueError):
    """An AMC file that cannot be converted; the message names the file, the line and the frame."""


@functools.cache
def amc_bone_layout() -> tuple[tuple[str, int], ...]:
    """``(bone, channels)`` in the order every AMC frame must list them.

    ``parse_amc`` concatenates a frame's values by position onto its 62-entry
    ``_CMU_MOCAP_JOINT_ORDER`` (``root0`` .. ``root5``, ``lowerbackrx``, ...), so a frame
    with a bone missing, repeated or out of order would shift every later channel.
    """
    from dm_control.suite.utils import parse_amc

    layout: list[list] = []
    for channel in parse_amc._CMU_MOCAP_JOINT_ORDER:
        bone = re.sub(r"(r[xyz]|\d)$", "", channel)
        if layout and layout[-1][0] == bone:
            layout[-1][1] += 1
        else:
            layout.append([bone, 1])
    return tuple((bone, count) for bone, count in layout)


def _renumbered_amc_text(path: Path) -> str:
    """AMC text with frames renumbered from 1, checked line by line.

    ``parse_amc`` expects the first frame to be numbered 1; files cropped by
    redistributors keep their original numbers (16_22.amc starts at frame 10), so the
    first number may be higher, but numbers must then rise by one: a gap is deleted
    frames, which would silently speed the motion up. Every frame must list the bones of
    :func:`amc_bone_layout` with finite values; anything else raises :class:`AMCFileError`
    naming the file, line and frame, instead of failing (or not) deep inside dm_control.
    """
    layout = amc_bone_layout()
    out: list[str] = []
    frames = 0  # frames read so far
    number = None  # the current frame's number in the file
    bone_index = 0  # bones of the current frame read so far
    lineno = 0

    def fail(lineno: int, problem: str) -> None:
        where = f"line {lineno}" + (f" (frame {number})" if number is not None else "")
        raise AMCFileError(f"{path}, {where}: {problem}")

    def check_frame_complete(lineno: int, ending: str) -> None:
        if number is not None and bone_index < len(layout):
            fail(
                lineno,
                f"frame {number} {ending} after {bone_index} of its {len(layout)} bones (next: {layout[bone_index][0]}).",
            )

    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue  # parse_amc stops reading at a blank line: drop them
        if FRAME_NUMBER_LINE.fullmatch(line):
            check_frame_complete(lineno, "ends")
            new_number = int(line)
            if number is not None and new_number != number + 1:
                if new_number > number + 1:
                    fail(
                        lineno,
                        f"frames {number + 1} to {new_number - 1} are missing: frame {number} is followed by {line}.",
                    )
                fail(lineno, f"frame number {line} follows frame {number}; frame numbers must rise by one.")
            number, bone_index, frames = new_number, 0, frames + 1
            out.append(str(frames))
            continue
        shown = line if len(line) <= 60 else f"{line[:57]}..."
        if number is None:
            if not line.startswith(("#", ":")):
                fail(lineno, f"{shown!r} before the first frame is neither a comment (#) nor a keyword (:DEGREES).")
            out.append(line)
            continue
        if bone_index == len(layout):
            fail(lineno, f"{shown!r} after the frame's {len(layout)} bones: expected the next frame number.")
        bone, count = layout[bone_index]
        tokens = line.split()
        if tokens[0] != bone:
            fail(lineno, f"expected bone {bone!r} with {count} value(s), found {shown!r}.")
        if len(tokens) - 1 != count:
            fail(lineno, f"bone {bone} needs {count} value(s), found {len(tokens) - 1}: {shown!r}.")
        for token in tokens[1:]:
            try:
                value = float(token)
            except ValueError:
                fail(lineno, f"bone {bone} has {token!r}, which is not a number.")
            if not math.isfinite(value):
                fail(lineno, f"bone {bone} has the non-finite value {token!r}.")
        out.append(line)
        bone_index += 1
    if number is None:
        raise AMCFileError(f"{path} holds no AMC frames (no line with a frame number).")
    check_frame_complete(lineno, "stops at the end of the file (truncated?)")
    return "\n".join(out) + "\n"


def held_frames(amc_text: str) -> tuple[int, int, int]:
    """``(frames, held_first, held_last)``: the frame count, and how many frames at the start (and at the
    end) repeat the first (last) frame's values exactly; 1 when the next frame differs."""
    frames: list[list[str]] = []
    for line in amc_text.splitlines():
        if FRAME_NUMBER_LINE.fullmatch(line):
            frames.append([])
        elif frames:
            frames[-1].append(line.strip())

    def run_length(ordered: list[list[str]]) -> int:
        return next((i for i, frame in enumerate(ordered) if frame != ordered[0]), len(ordered))

    return len(frames), run_length(frames), run_length(frames[::-1])


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
        self.joint_names = tuple(joint.name for joint in self.walker.mocap_joints)
        self._utils = utils
        model = self.physics.model
        walker_geoms = [
            i
            for i in range(model.ngeom)
            if model.geom_bodyid[i] > 0 and (model.geom_contype[i] or model.geom_conaffinity[i])
        ]
        self._geoms = np.array(walker_geoms)
        self._geom_size = np.array(model.geom_size[self._geoms])
        kind = np.array(model.geom_type[self._geoms])
        self._capsules = kind == mujoco.mjtGeom.mjGEOM_CAPSULE
        self._spheres = kind == mujoco.mjtGeom.mjGEOM_SPHERE
        self._ellipsoids = kind == mujoco.mjtGeom.mjGEOM_ELLIPSOID
        if not np.all(self._capsules | self._spheres | self._ellipsoids):
            raise ValueError("the walker has colliding geoms other than capsules, spheres and ellipsoids")

    def lowest_point(self) -> float:
        """Height above the floor (z = 0) of the walker's lowest point in its current pose, negative
        below it: the signed distance of the nearest colliding geom."""
        data = self.physics.data
        centre_height = data.geom_xpos[self._geoms, 2]
        # Row 2 of each geom's rotation: its local axes' vertical components.
        vertical = data.geom_xmat[self._geoms].reshape(-1, 3, 3)[:, 2, :]
        size, capsule, ellipsoid = self._geom_size, self._capsules, self._ellipsoids
        reach = np.zeros(len(self._geoms))
        reach[capsule] = np.abs(vertical[capsule, 2]) * size[capsule, 1] + size[capsule, 0]
        reach[self._spheres] = size[self._spheres, 0]
        reach[ellipsoid] = np.sqrt(((vertical[ellipsoid] * size[ellipsoid]) ** 2).sum(axis=1))
        return float(np.min(centre_height - reach))

    def lowest_points(self, qpos: np.ndarray) -> np.ndarray:
        """:meth:`lowest_point` for each row of ``qpos`` (steps, 63)."""
        heights = np.empty(len(qpos))
        for step, pose in enumerate(qpos):
            self._utils.set_walker(self.physics, self.walker, pose, np.zeros(self.physics.model.nv))
            self.physics.forward()
            heights[step] = self.lowest_point()
        return heights

    def feature_lowest_points(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """:meth:`lowest_point` at each step of reference features (each field shaped (steps, ...))."""
        steps = len(features["joints"])
        heights = np.empty(steps)
        for step in range(steps):
            self.set_features({name: values[step] for name, values in features.items()})
            heights[step] = self.lowest_point()
        return heights

    def features(self, qpos: np.ndarray, qvel: np.ndarray) -> dict[str, np.ndarray]:
        self._utils.set_walker(self.physics, self.walker, qpos, qvel)
        self.physics.forward()
        return self._utils.get_features(self.physics, self.walker)

    @functools.cached_property
    def leg_length(self) -> float:
        """The walker's hip-to-ankle height standing straight (m), along the root frame's y axis, the
        vertical of CMU's ASF skeletons (both legs averaged)."""
        qpos = np.zeros(7 + len(self.joint_names))
        qpos[3] = 1.0
        self._utils.set_walker(self.physics, self.walker, qpos, np.zeros(self.physics.model.nv))
        self.physics.forward()
        root = self.physics.named.data.xpos["walker/root"]
        ankles = [self.physics.named.data.xpos[f"walker/{side}foot"] for side in "lr"]
        return float(np.mean([root[1] - ankle[1] for ankle in ankles]))

    def set_features(self, features: dict[str, np.ndarray]) -> None:
        """Poses the walker as one step of reference features (a kinematic replay)."""
        self._utils.set_walker_from_features(self.physics, self.walker, features)
        self.physics.forward()


@functools.cache
def walker_poser() -> WalkerPoser:
    """One shared :class:`WalkerPoser` (compiling the walker takes about a second)."""
    return WalkerPoser()


def convert_amc(
    path: str | Path, clip_id: str, dt: float = DEFAULT_DT, asf_path: str | Path | None = None
) -> ConvertedClip:
    """Converts one ``.amc`` file into reference features for the V2020 walker, fitted to its floor.

    ``asf_path`` is the subject's skeleton, by default ``SS.asf`` beside the file; without one the
    root is scaled by :data:`~mocapact_envs.mocap.retarget.DEFAULT_ROOT_SCALE`.
    """
    from dm_control.suite.utils import parse_amc

    path = Path(path)
    amc_text = _renumbered_amc_text(path)
    with tempfile.NamedTemporaryFile("w", suffix=".amc", delete=False) as tmp:
        tmp.write(amc_text)
    try:
        converted = parse_amc.convert(tmp.name, _suite_physics(), dt)
    finally:
        os.unlink(tmp.name)

    qpos = np.array(converted.qpos, dtype=np.float64).T  # (T, 63)
    qvel = np.array(converted.qvel, dtype=np.float64).T  # (T - 1, 62): forward differences
    if len(qpos) < 2:
        raise ValueError(f"{path} is too short to convert: {len(qpos)} step(s) at dt={dt}.")

    poser = walker_poser()
    asf_path = Path(asf_path) if asf_path is not None else retarget.subject_asf_path(path)
    if asf_path.is_file():
        root_scale = poser.leg_length / retarget.asf_leg_length(asf_path)
        root_scale_from = f"leg length in {asf_path.name}"
    else:
        root_scale, root_scale_from = retarget.DEFAULT_ROOT_SCALE, "default (no ASF file)"
    qpos[:, :3] *= root_scale
    qvel[:, :3] *= root_scale
    source_lowest = poser.lowest_points(qpos)
    broken = retarget.broken_steps(qpos[:, :3], dt)
    broken |= retarget.held_steps(len(qpos), dt, *held_frames(amc_text), frame_dt=parse_amc.MOCAP_DT)
    correction = retarget.height_correction(source_lowest, qpos[:, 2], broken, dt)
    qpos[:, 2] += correction.offset
    qvel[:, 2] += np.diff(correction.offset) / dt  # the free joint's linear velocity is in world axes
    qvel = np.concatenate([qvel, qvel[-1:]], axis=0)  # the last step keeps the last velocity

    steps = [poser.features(p, v) for p, v in zip(qpos, qvel, strict=True)]
    features = {name: np.stack([s[name] for s in steps]) for name in WALKER_POSE_FIELDS}
    quality = retarget.assess(
        root_scale=root_scale,
        root_scale_from=root_scale_from,
        source_lowest=source_lowest,
        lowest=poser.lowest_points(qpos),
        correction=correction,
        broken=broken,
        joints=qpos[:, 7:],
        joint_range=poser.joint_range,
        joint_names=poser.joint_names,
    )
    return ConvertedClip(clip_id=clip_id, dt=dt, features=features, quality=quality)


def write_clip(h5: h5py.File, clip: ConvertedClip) -> None:
    """Writes one clip as a group in dm_control's ``HDF5TrajectoryLoader`` layout."""
    group = h5.create_group(clip.clip_id)
    group.attrs["num_steps"] = clip.num_steps
    group.attrs["dt"] = clip.dt
    group.attrs["quality"] = clip.quality.to_json()
    group.create_group("props")
    walker = group.create_group("walkers/walker_0")
    walker.attrs["name"] = np.bytes_(b"CMU_2020")
    walker.attrs["model"] = CMU_2020_MODEL_ENUM
    walker.attrs["mass"] = 0.0
    walker.attrs["end_effector_names"] = np.array([], dtype="S1")
    walker.attrs["appendage_names"] = np.array([], dtype="S1")
    walker.attrs["joint_range_violation"] = clip.quality.joint_range_violation
    walker.create_group("scaling")
    walker.create_group("markers")
    for name, values in clip.features.items():
        # dm_control stores each field as (dim, T).
        walker.create_dataset(name, data=values.reshape(clip.num_steps, -1).T)
