"""How the walker's root is turned and tilted against the reference's: the two parts of its orientation error.

A time-indexed expert (MoCapAct's observations: the body's own sensors and the time) cannot tell its heading from
the reference's, since the physics is the same about any vertical axis; it can feel its tilt (``walker/world_zaxis``).
On long snippets both drift (``baselines/ppo_expert/drift.py``), and a tilt that grows is what precedes a fall.
"""

from __future__ import annotations

import numpy as np

#: The CMU humanoid's root frame: its local y axis points up, its local x axis lies in the ground plane.
ROOT_UP_AXIS, ROOT_FORWARD_AXIS = 1, 0


def _axis(quaternions: np.ndarray, axis: int) -> np.ndarray:
    """Column ``axis`` of the rotation matrices of unit quaternions ``(..., 4)`` (w, x, y, z): that local axis in
    the world frame, ``(..., 3)``."""
    w, x, y, z = np.moveaxis(np.asarray(quaternions, np.float64), -1, 0)
    if axis == 0:
        return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], axis=-1)
    if axis == 1:
        return np.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], axis=-1)
    return np.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], axis=-1)


def heading_and_tilt(quaternions: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The root's heading error (radians, positive: turned left of the reference, in (-pi, pi]) and tilt error
    (radians: the angle between the two up axes once the heading error is turned back, so a turn about the vertical
    is no tilt) of root quaternions ``(..., 4)`` against the reference's, broadcast together."""
    forward, forward_reference = _axis(quaternions, ROOT_FORWARD_AXIS), _axis(reference, ROOT_FORWARD_AXIS)
    heading = np.arctan2(forward[..., 1], forward[..., 0]) - np.arctan2(
        forward_reference[..., 1], forward_reference[..., 0]
    )
    heading = np.pi - (np.pi - heading) % (2 * np.pi)
    up, up_reference = _axis(quaternions, ROOT_UP_AXIS), _axis(reference, ROOT_UP_AXIS)
    cos, sin = np.cos(heading), np.sin(heading)
    # The walker's up axis turned back by the heading error, about the vertical.
    unturned = np.stack([cos * up[..., 0] + sin * up[..., 1], -sin * up[..., 0] + cos * up[..., 1], up[..., 2]], -1)
    cosine = np.clip(np.sum(unturned * up_reference, axis=-1), -1.0, 1.0)
    return heading, np.arccos(cosine)
