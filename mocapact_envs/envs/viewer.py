"""``render_mode="human"``: MuJoCo's own viewer window (``mujoco.viewer``'s passive viewer), as Gymnasium's MuJoCo
environments open a window of MuJoCo's for that mode.

The window shows the simulation the environment steps (its ``MjModel`` and ``MjData``, shared, not copied),
from the environment's camera, with the reference ghost where the environment draws one; each
:meth:`HumanViewer.render` copies the current state to the window and waits so that the episode plays in real
time. Closing the window ends the showing, not the episode. Without a display the viewer cannot open:
:func:`display_problem` says why, and the environment refuses ``render_mode="human"`` when it is made.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

HUMAN_RENDER_HINT = (
    "Without a screen, render_mode='rgb_array' gives the frames (mocapact_envs.wrappers.video.RecordVideo writes "
    "episodes to mp4 files), or run under a virtual display such as xvfb-run"
)


def display_problem() -> str | None:
    """Why MuJoCo's viewer cannot open a window here, or ``None`` when it can (or may: macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        gl = os.environ.get("MUJOCO_GL")
        setting = f"; MUJOCO_GL={gl} renders off screen only" if gl else ""
        return f"there is no display: DISPLAY and WAYLAND_DISPLAY are unset{setting}"
    try:
        import glfw
    except ImportError as error:  # mujoco installs glfw; a broken install lacks it
        return f"glfw, which MuJoCo's viewer opens its window with, does not import ({error})"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glfw warns with the reason, which the message below names
        if not glfw.init():
            where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
            return f"GLFW could not connect to the display {where!r}"
    return None


def check_display(env_name: str) -> None:
    """Raises ``RuntimeError`` naming what is missing when MuJoCo's viewer cannot open a window here."""
    problem = display_problem()
    if problem is not None:
        raise RuntimeError(
            f"{env_name}(render_mode='human') opens MuJoCo's viewer window, but {problem}. {HUMAN_RENDER_HINT}."
        )


#: Viewers not closed yet: closed at exit, before GLFW is terminated (a window thread still drawing then crashes).
_OPEN_VIEWERS: weakref.WeakSet[HumanViewer] = weakref.WeakSet()


def _close_open_viewers() -> None:
    for viewer in list(_OPEN_VIEWERS):
        viewer.close()


class HumanViewer:
    """MuJoCo's passive viewer over a dm_control ``Physics``, playing in real time at ``fps``.

    Args:
        physics: the environment's ``mjcf.Physics`` (its ``model.ptr`` and ``data.ptr`` are shown).
        camera: the camera's name or id in the model (``-1``: MuJoCo's free camera).
        fps: frames a second of simulated time (the environment's ``metadata["render_fps"]``).
        scene_callback: ``None`` or dm_control's ``scene_callback``, called with ``(physics, scene)`` to add
            geoms (the fast backend's reference ghost) to the viewer's user scene.
    """

    def __init__(
        self, physics: Any, camera: str | int, fps: float, scene_callback: Callable[[Any, Any], None] | None = None
    ):
        import mujoco.viewer

        self._physics, self._scene_callback = physics, scene_callback
        self._model = physics.model.ptr
        self._frame_time = 1.0 / fps
        self._last_frame = None
        before = set(threading.enumerate())
        self._handle = mujoco.viewer.launch_passive(
            self._model, physics.data.ptr, show_left_ui=False, show_right_ui=False
        )
        # The window's threads: close() waits for them, so the process never exits under a window still drawing.
        self._threads = [thread for thread in threading.enumerate() if thread not in before]
        # Registered again after each launch_passive, which registers GLFW's terminate: at exit this runs first.
        atexit.unregister(_close_open_viewers)
        atexit.register(_close_open_viewers)
        _OPEN_VIEWERS.add(self)
        camera_id = physics.model.name2id(camera, "camera") if isinstance(camera, str) else int(camera)
        if camera_id >= 0:
            with self._handle.lock():
                self._handle.cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
                self._handle.cam.fixedcamid = camera_id

    @property
    def is_running(self) -> bool:
        """Whether the window is open (the user may close it)."""
        return self._handle.is_running()

    def shows(self, physics: Any) -> bool:
        """Whether this viewer shows ``physics``' model (a composer task that recompiles makes a new one)."""
        return physics.model.ptr is self._model

    def render(self) -> None:
        """Shows the current state, then waits until a frame's time has passed since the last one."""
        handle = self._handle
        if not handle.is_running():
            return
        if self._scene_callback is not None and handle.user_scn is not None:
            with handle.lock():
                handle.user_scn.ngeom = 0
                self._scene_callback(self._physics, handle.user_scn)
        handle.sync()
        now = time.perf_counter()
        if self._last_frame is not None:
            time.sleep(max(0.0, self._frame_time - (now - self._last_frame)))
        self._last_frame = time.perf_counter()

    def close(self) -> None:
        """Closes the window and waits for its threads to end."""
        self._handle.close()
        for thread in self._threads:
            thread.join(timeout=10)
        _OPEN_VIEWERS.discard(self)
