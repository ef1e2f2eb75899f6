"""Fitting converted CMU clips to the V2020 walker's floor, and each clip's quality report.

Measured on the 96 shared clips with one fixed root scale of 1.2: per-subject leg lengths
differ from the walker's, so the median step's lowest point sat from 6 cm below to 10 cm
above the floor depending on the subject. The retargeting here:

1. scales the root translation by the walker's leg length over the subject's, read from the
   subject's ASF file (hip joint, femur and tibia along the vertical, both legs averaged); 1.2
   without an ASF file;
2. flags broken steps: the root moving faster than :data:`MAX_ROOT_SPEED` between two steps
   (capture glitches); the steps outside the longest stretch without such a jump are broken;
   so are steps on a capture hold, frames that repeat one pose exactly at the file's start or end
   (no real capture repeats a pose to the last digit; CMU_008_07 holds its first 6 frames, then
   the root jumps 11 cm, which resampling smooths to 4 m/s, below the speed test);
3. corrects the root height per step, smoothly, so the walker stands on the floor: on steps in
   ground contact the correction puts the lowest point on the floor; over flight (the root falls
   faster than :data:`FLIGHT_ACCELERATION` with the lowest point above :data:`FLIGHT_CLEARANCE`)
   and broken steps it is interpolated linearly between the contact steps around them, so jumps
   keep their height; the result is smoothed over :data:`SMOOTHING_HALF_WIDTH` steps either side,
   then raised, smoothly again, where a step would still be below the floor. Clips whose stances
   last only a few steps (fast running) get narrower windows, down to none, until their median
   step stands within :data:`MAX_PLAUSIBLE_MEDIAN_HEIGHT` of the floor.

Joint angles and the root's orientation and horizontal path (beyond the scale) are unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: ASF lengths (and AMC root translations) are in units of 1/0.45 inch; ``parse_amc`` uses the same.
ASF_UNIT_METRES = 0.0254 / 0.45
#: The root scale without an ASF file: the V2020 body is the suite's CMU body scaled by 1.2.
DEFAULT_ROOT_SCALE = 1.2
#: Faster root motion between two steps (m/s) is a capture glitch: sprinters peak near 12 m/s.
MAX_ROOT_SPEED = 12.0
#: A step is in flight when the root falls at least this fast (m/s^2; g is 9.81) ...
FLIGHT_ACCELERATION = 0.5 * 9.81
#: ... and the lowest point is this far (m) above the floor after the clip's constant offset.
FLIGHT_CLEARANCE = 0.01
#: Half width, in steps, of the Hann windows that smooth the height correction.
SMOOTHING_HALF_WIDTH = 2
#: The report counts steps deeper than this below the floor (m).
PENETRATION_REPORT_DEPTH = 0.02
#: Clips whose unbroken steps still go deeper than this (m) after the correction are implausible.
MAX_PLAUSIBLE_PENETRATION = 0.01
#: Clips whose median step's lowest point stays higher than this (m) after the correction float.
MAX_PLAUSIBLE_MEDIAN_HEIGHT = 0.01
#: Clips in ground contact on fewer steps than this share are implausible (no floor to fit).
MIN_CONTACT_SHARE = 0.2


def subject_asf_path(amc_path: str | Path) -> Path:
    """Where a clip's skeleton lives: ``SS.asf`` beside ``SS_TT.amc``."""
    amc_path = Path(amc_path)
    return amc_path.with_name(f"{amc_path.stem.split('_')[0]}.asf")


def asf_leg_length(asf_path: str | Path) -> float:
    """The subject's standing hip-to-ankle height in metres: the vertical (ASF y) components of the
    hip joint, femur and tibia bones in the rest pose, averaged over both legs."""
    text = Path(asf_path).read_text(errors="replace")
    bones = {}
    for block in re.findall(r"\bbegin\b(.*?)\bend\b", text, re.S):
        name = re.search(r"\bname\s+(\S+)", block)
        direction = re.search(r"\bdirection\s+(\S+)\s+(\S+)\s+(\S+)", block)
        length = re.search(r"\blength\s+(\S+)", block)
        if name and direction and length:
            bones[name.group(1)] = np.array(direction.groups(), dtype=float) * float(length.group(1))
    needed = [f"{side}{bone}" for side in "lr" for bone in ("hipjoint", "femur", "tibia")]
    missing = [bone for bone in needed if bone not in bones]
    if missing:
        raise ValueError(f"{asf_path} lacks the leg bones {', '.join(missing)}; it is not a CMU ASF skeleton.")
    drop = [-(bones[f"{side}hipjoint"] + bones[f"{side}femur"] + bones[f"{side}tibia"])[1] for side in "lr"]
    return float(np.mean(drop)) * ASF_UNIT_METRES


def broken_steps(root_positions: np.ndarray, dt: float) -> np.ndarray:
    """Steps outside the longest stretch in which the root never moves faster than
    :data:`MAX_ROOT_SPEED` between two steps (a boolean mask)."""
    speed = np.linalg.norm(np.diff(root_positions, axis=0), axis=1) / dt
    cuts = np.flatnonzero(speed > MAX_ROOT_SPEED) + 1
    bounds = np.concatenate([[0], cuts, [len(root_positions)]])
    longest = int(np.argmax(np.diff(bounds)))
    broken = np.ones(len(root_positions), dtype=bool)
    broken[bounds[longest] : bounds[longest + 1]] = False
    return broken


def held_steps(
    num_steps: int, dt: float, num_frames: int, held_first: int, held_last: int, frame_dt: float
) -> np.ndarray:
    """Steps on a capture hold (a boolean mask): the file's first ``held_first`` of ``num_frames`` frames repeat
    one pose, as do its last ``held_last`` (1: no hold). A step is on the hold when it lies on the held frames or
    between the hold and the next frame (the jump out of it); frames are ``frame_dt`` apart, steps ``dt``."""
    times = np.arange(num_steps) * dt
    held = np.zeros(num_steps, dtype=bool)
    if held_first > 1:
        held |= times < held_first * frame_dt - 1e-9
    if held_last > 1:
        held |= times > (num_frames - held_last - 1) * frame_dt + 1e-9
    return held


def _hann_smooth(values: np.ndarray, half_width: int) -> np.ndarray:
    from scipy import ndimage

    window = np.hanning(2 * half_width + 3)[1:-1]
    return ndimage.convolve1d(values, window / window.sum(), mode="nearest")


def _smooth_envelope(values: np.ndarray, half_width: int) -> np.ndarray:
    """A smooth curve never below ``values``: the running maximum, then a Hann window of the same width."""
    from scipy import ndimage

    return _hann_smooth(ndimage.maximum_filter1d(values, 2 * half_width + 1, mode="nearest"), half_width)


@dataclass(frozen=True)
class HeightCorrection:
    """The per-step root height correction (m), which steps it treated as contact, and the half width
    (steps) of the windows that smoothed it."""

    offset: np.ndarray
    contact: np.ndarray
    smoothing_half_width: int


def height_correction(lowest: np.ndarray, root_height: np.ndarray, broken: np.ndarray, dt: float) -> HeightCorrection:
    """The smooth per-step root height correction that puts the walker on the floor (see the module).

    ``lowest`` is the walker's lowest-point height at each step before the correction, ``root_height``
    the root's height (for the flight test), ``broken`` the mask of :func:`broken_steps`. The
    smoothing windows narrow from :data:`SMOOTHING_HALF_WIDTH` steps towards none while the median
    step would still float more than :data:`MAX_PLAUSIBLE_MEDIAN_HEIGHT` (stances of a few steps).
    """
    unbroken = ~broken
    constant = -np.percentile(lowest[unbroken], 20)
    fall = np.gradient(np.gradient(root_height, dt), dt)
    fall = np.convolve(np.pad(fall, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    flight = (fall < -FLIGHT_ACCELERATION) & (lowest + constant > FLIGHT_CLEARANCE)
    contact = unbroken & ~flight
    steps = np.arange(len(lowest))
    if contact.any():
        levelled = np.interp(steps, steps[contact], -lowest[contact])
    else:
        levelled = np.full(len(lowest), constant)
    for half_width in range(SMOOTHING_HALF_WIDTH, -1, -1):
        offset = _hann_smooth(levelled, half_width)
        below = np.where(unbroken, np.maximum(0.0, -(lowest + offset)), 0.0)
        offset = offset + _smooth_envelope(below, half_width)
        if np.median((lowest + offset)[unbroken]) <= MAX_PLAUSIBLE_MEDIAN_HEIGHT:
            break
    return HeightCorrection(offset=offset, contact=contact, smoothing_half_width=half_width)


@dataclass(frozen=True)
class ClipQuality:
    """How a converted clip fits the V2020 walker (lengths in metres). Penetration figures are over
    the steps not in ``broken_steps``."""

    root_scale: float
    """Root translation scale applied to the mocap."""
    root_scale_from: str
    """Where the scale came from: the subject's ASF leg length, or the default."""
    height_offset_m: float
    """Median per-step root height correction."""
    height_offset_spread_m: float
    """Largest deviation of the per-step correction from its median."""
    source_median_lowest_height_m: float
    """The median step's lowest point after the scale, before the height correction."""
    source_deepest_penetration_m: float
    """Deepest unbroken penetration after the scale, before the height correction."""
    deepest_penetration_m: float
    penetrating_share: float
    """Share of unbroken steps more than 2 cm below the floor."""
    median_lowest_height_m: float
    contact_share: float
    """Share of steps in ground contact (neither flight nor broken)."""
    smoothing_half_width: int
    """Half width (steps) of the windows that smoothed the height correction."""
    joint_range_violation: float
    """Share of joint values outside the walker's joint ranges."""
    worst_joint: str
    worst_joint_excess_rad: float
    """How far the worst joint goes outside its range (0 when all stay inside)."""
    broken_steps: tuple[int, ...] = ()
    problems: tuple[str, ...] = field(default=())
    """Why the clip cannot be made plausible; empty when it can."""

    @property
    def plausible(self) -> bool:
        return not self.problems

    def problems_within(self, start: int, end: int) -> tuple[str, ...]:
        """The problems that concern steps ``start`` to ``end`` (inclusive): broken steps only there."""
        kept = tuple(p for p in self.problems if not p.startswith(BROKEN_STEPS_PROBLEM))
        broken = tuple(step for step in self.broken_steps if start <= step <= end)
        return ((broken_steps_problem(broken),) if broken else ()) + kept

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClipQuality:
        values = json.loads(text)
        values["broken_steps"] = tuple(values["broken_steps"])
        values["problems"] = tuple(values["problems"])
        return cls(**values)


def broken_steps_problem(steps: tuple[int, ...]) -> str:
    """The report's reason for refusing steps that :func:`broken_steps` flags."""
    return (
        f"{BROKEN_STEPS_PROBLEM} {describe_steps(steps)}: a capture glitch (the root moves faster than "
        f"{MAX_ROOT_SPEED:g} m/s, or the file holds one pose there)"
    )


BROKEN_STEPS_PROBLEM = "broken steps"


def describe_steps(steps: tuple[int, ...]) -> str:
    """``0-1, 7`` for steps (0, 1, 7)."""
    runs, start = [], None
    for i, step in enumerate(steps):
        if start is None:
            start = step
        if i + 1 == len(steps) or steps[i + 1] != step + 1:
            runs.append(str(start) if start == step else f"{start}-{step}")
            start = None
    return ", ".join(runs)


def assess(
    *,
    root_scale: float,
    root_scale_from: str,
    source_lowest: np.ndarray,
    lowest: np.ndarray,
    correction: HeightCorrection,
    broken: np.ndarray,
    joints: np.ndarray,
    joint_range: np.ndarray,
    joint_names: tuple[str, ...],
) -> ClipQuality:
    """The quality report of one converted clip (``lowest``: lowest-point heights after correction)."""
    unbroken = ~broken
    low, high = joint_range[:, 0], joint_range[:, 1]
    excess = np.maximum(low - joints, joints - high).max(axis=0)
    worst = int(np.argmax(excess))
    deepest = float(max(0.0, -lowest[unbroken].min()))
    contact_share = float(correction.contact.mean())
    broken_list = tuple(int(step) for step in np.flatnonzero(broken))
    problems = []
    if broken_list:
        problems.append(broken_steps_problem(broken_list))
    if deepest > MAX_PLAUSIBLE_PENETRATION:
        problems.append(f"still {100 * deepest:.1f} cm below the floor after the height correction")
    median_height = float(np.median(lowest[unbroken]))
    if median_height > MAX_PLAUSIBLE_MEDIAN_HEIGHT:
        problems.append(
            f"the median step floats {100 * median_height:.1f} cm above the floor after the smoothed height "
            "correction (stances too short for it to follow)"
        )
    if contact_share < MIN_CONTACT_SHARE:
        problems.append(f"in ground contact on only {contact_share:.0%} of steps")
    return ClipQuality(
        root_scale=float(root_scale),
        root_scale_from=root_scale_from,
        height_offset_m=float(np.median(correction.offset)),
        height_offset_spread_m=float(np.abs(correction.offset - np.median(correction.offset)).max()),
        source_median_lowest_height_m=float(np.median(source_lowest[unbroken])),
        source_deepest_penetration_m=float(max(0.0, -source_lowest[unbroken].min())),
        deepest_penetration_m=deepest,
        penetrating_share=float(np.mean(lowest[unbroken] < -PENETRATION_REPORT_DEPTH)),
        median_lowest_height_m=median_height,
        contact_share=contact_share,
        smoothing_half_width=correction.smoothing_half_width,
        joint_range_violation=float(np.mean((joints < low) | (joints > high))),
        worst_joint=joint_names[worst],
        worst_joint_excess_rad=float(max(0.0, excess[worst])),
        broken_steps=broken_list,
        problems=tuple(problems),
    )
