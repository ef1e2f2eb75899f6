"""The egocentric camera frames rollouts may log, rendered the same way wherever they are needed.

MoCapAct's ``--log_cameras`` logged the walker's 64 x 64 egocentric camera. Here the
frame is a second, offscreen render of the current physics state through that
camera, independent of the environment's own ``render()`` (no reference ghost,
any size). On a machine without a GPU (``MUJOCO_GL=egl`` falling back to
software, or ``osmesa``) it costs far more than a physics step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: MuJoCo's name of the walker's head camera, and the observation key its frames are logged under.
EGOCENTRIC_CAMERA = "walker/egocentric"
CAMERA_OBSERVATION_KEY = "walker/egocentric_camera"
DEFAULT_CAMERA_SIZE = 64


def camera_space(size: int) -> spaces.Box:
    return spaces.Box(0, 255, (size, size, 3), np.uint8)


def render_egocentric(env: gym.Env, size: int) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 frame of the walker's egocentric camera."""
    physics = getattr(env.unwrapped, "physics", None)
    if physics is None:
        raise ValueError(
            f"{type(env.unwrapped).__name__} has no MuJoCo physics to render camera frames from; "
            "use the dm_control backend to log cameras."
        )
    return physics.render(height=size, width=size, camera_id=EGOCENTRIC_CAMERA)
