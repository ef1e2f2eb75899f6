"""Render modes as Gymnasium's MuJoCo environments offer them, for every environment that renders: ``rgb_array``,
``depth_array`` (metres) and ``human`` (MuJoCo's viewer window; a clear error without a display)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest

import mocapact_envs  # noqa: F401  (registers the ids)
from mocapact_envs.envs.dm_control_adapter import RENDER_MODES

# Each environment that renders, made as a user makes it.
RENDERING = {
    "tracking_fast": ("mocapact/MocapTracking-CMU_016_22-v0", {}),
    "tracking_dm_control": ("mocapact/MocapTracking-CMU_016_22-v0", {"backend": "dm_control"}),
    "go_to_target": ("mocapact/GoToTarget-v0", {}),
    "velocity_control_low_level": ("mocapact/VelocityControl-v0", {"low_level_policy": "pretrained"}),
    "motion_completion": ("mocapact/MotionCompletion-CMU_016_22-v0", {"max_steps": 40}),
}
WIDTH, HEIGHT = 96, 72


def test_every_rendering_env_lists_the_modes_it_renders():
    assert RENDER_MODES == ("human", "rgb_array", "depth_array")
    for env_id, _ in RENDERING.values():
        assert gym.spec(env_id).entry_point  # registered
        env_class = gym.envs.registration.load_env_creator(gym.spec(env_id).entry_point)
        assert env_class.metadata["render_modes"] == list(RENDER_MODES), env_id
    envs = gym.make_vec("mocapact/MocapTracking-CMU_016_22-v0", num_envs=2, vectorization_mode="vector_entry_point")
    assert envs.metadata["render_modes"] == []  # the native vector env does not render: a single env does
    envs.close()
    with pytest.raises(ValueError, match=r"unknown render_mode 'rgb'; choose None or one of 'human', 'rgb_array', "
                       r"'depth_array'\."):  # fmt: skip
        mocapact_envs.MocapTrackingEnv("CMU_016_22", render_mode="rgb")


@pytest.mark.parametrize("kind", sorted(RENDERING))
def test_rgb_and_depth_images(kind):
    env_id, kwargs = RENDERING[kind]
    images = {}
    for mode in ("rgb_array", "depth_array"):
        env = gym.make(env_id, render_mode=mode, width=WIDTH, height=HEIGHT, **kwargs)
        _, info = env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
        images[mode] = env.render()
        if kind == "motion_completion":  # the prompt's images, in the mode's kind
            assert len(info["prompt_frames"]) == 33 and info["prompt_frames"][0].shape == images[mode].shape
        env.close()
    rgb, depth = images["rgb_array"], images["depth_array"]
    assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.dtype == np.uint8 and rgb.std() > 10
    assert depth.shape == (HEIGHT, WIDTH) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() > 0.1 and depth.max() > 2 * depth.min()


def test_depth_is_in_metres_from_the_camera():
    width, height = 320, 240
    env = gym.make("mocapact/MocapTracking-CMU_016_22-v0", render_mode="depth_array", width=width, height=height)
    env.reset(seed=0, options={"start_step": 0})
    depth = env.render()
    physics = env.unwrapped.physics
    camera = physics.model.name2id("walker/side", "camera")
    # The walker's root in the camera's frame (MuJoCo's camera looks along its -z): distance ahead and pixel.
    offset = physics.named.data.xpos["walker/root"] - physics.data.cam_xpos[camera]
    right, up, back = physics.data.cam_xmat[camera].reshape(3, 3).T @ offset
    ahead = -back
    focal = (height / 2) / np.tan(np.radians(physics.model.cam_fovy[camera]) / 2)
    column, row = round(width / 2 + focal * right / ahead), round(height / 2 - focal * up / ahead)
    # The pelvis' near side, a little nearer than its centre; the sky is far (MuJoCo's far plane).
    assert ahead - 0.3 < depth[row, column] < ahead, (depth[row, column], ahead)
    assert depth.max() > 10 * ahead
    env.close()


def test_human_mode_without_a_display_says_so(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("MUJOCO_GL", "egl")
    message = (
        r"\(render_mode='human'\) opens MuJoCo's viewer window, but there is no display: DISPLAY and "
        r"WAYLAND_DISPLAY are unset; MUJOCO_GL=egl renders off screen only\. Without a screen, "
        r"render_mode='rgb_array' gives the frames \(mocapact_envs\.wrappers\.video\.RecordVideo"
    )
    for env_id, kwargs in RENDERING.values():
        with pytest.raises(RuntimeError, match=message):
            gym.make(env_id, render_mode="human", **kwargs)


HUMAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import gymnasium as gym, numpy as np
    import mocapact_envs

    shown = {}
    for kind, env_id, kwargs in json.loads(sys.argv[1]):
        env = gym.make(env_id, render_mode="human", **kwargs)
        env.reset(seed=0)
        viewer = env.unwrapped._viewer
        for _ in range(3):
            env.step(np.zeros(env.action_space.shape, np.float32))
        ghost_geoms = viewer._handle.user_scn.ngeom
        camera = (int(viewer._handle.cam.type), int(viewer._handle.cam.fixedcamid))
        shown[kind] = {"running": viewer.is_running, "render": env.render(), "ghost_geoms": ghost_geoms,
                       "camera": camera, "side": env.unwrapped.physics.model.name2id("walker/side", "camera")}
        env.close()
        shown[kind]["closed"] = not viewer.is_running
    print(json.dumps(shown))
    """
)


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb for a display to open MuJoCo's viewer on")
def test_human_mode_opens_mujocos_viewer_on_a_display(tmp_path):
    import json

    display = f":{90 + os.getpid() % 9}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24"], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        kinds = [[kind, *RENDERING[kind]] for kind in ("tracking_fast", "tracking_dm_control", "go_to_target")]
        environment = {**os.environ, "DISPLAY": display, "MUJOCO_GL": "egl"}
        result = subprocess.run(
            [sys.executable, "-c", HUMAN_SCRIPT, json.dumps(kinds)],
            capture_output=True,
            text=True,
            timeout=600,
            env=environment,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        shown = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    for kind, report in shown.items():
        # The window was open, rendered from the env's fixed camera, returned None from render(), and closed.
        assert report["running"] and report["closed"] and report["render"] is None, (kind, report)
        assert report["camera"] == [2, report["side"]], (kind, report)  # mjCAMERA_FIXED at walker/side
    # The fast backend draws the reference ghost into the viewer's scene (dm_control's is part of its model).
    assert shown["tracking_fast"]["ghost_geoms"] > 20 and shown["tracking_dm_control"]["ghost_geoms"] == 0
