"""``RecordVideo``: Gymnasium's video-recording wrapper, writing mp4 files with imageio's ffmpeg instead of moviepy.

Gymnasium's :class:`gymnasium.wrappers.RecordVideo` needs moviepy, which cannot be installed beside the
locked pillow; this wrapper takes the same arguments, starts and stops recordings at the same episodes and
steps, and names the files the same way (``{name_prefix}-episode-{n}.mp4``, ``{name_prefix}-step-{n}.mp4``).
The frames are written by :func:`write_video` (H.264 through imageio-ffmpeg, the ``[video]`` extra), under a
temporary name and renamed into place, so a video is whole or absent; the demo, evaluations and baselines write
their videos with it too.

    >>> env = RecordVideo(gym.make("mocapact/MocapTracking-CMU_016_22-v0", render_mode="rgb_array"), "videos",
    ...                   episode_trigger=lambda episode: episode % 10 == 0)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from mocapact_envs.extras import needs_extra, require_extra
from mocapact_envs.files import replace_atomically


@needs_extra("write_video")
def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Writes an mp4 under a temporary name, then renames it into place (the ``[video]`` extra: imageio, ffmpeg)."""
    import imageio.v2 as imageio

    replace_atomically(path, lambda tmp: imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=8))


class RecordVideo(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Records episodes of an ``render_mode="rgb_array"`` environment to mp4 files, as Gymnasium's ``RecordVideo``.

    A recording starts at an episode for which ``episode_trigger(episode_id)`` is true (counting from 0), or at a
    step (counted over all episodes, from 0) for which ``step_trigger(step_id)`` is; neither given: Gymnasium's
    ``capped_cubic_video_schedule`` (episodes 0, 1, 8, 27, ..., 1000, 2000, ...). With ``video_length=0`` a
    recording holds one whole episode, from its reset frame to its last step; with ``video_length=n`` it holds
    ``n`` frames (then one more, as Gymnasium's wrapper, which stops once it has more than ``n``), across episode
    ends. A recording still open is written when the wrapper is closed.

    Args:
        env: an environment whose ``render()`` gives ``(height, width, 3)`` uint8 images (``render_mode="rgb_array"``).
        video_folder: where the videos go (created if missing).
        episode_trigger, step_trigger, video_length, name_prefix: as Gymnasium's ``RecordVideo``.
        fps: frames per second of the videos; ``None``: the environment's ``metadata["render_fps"]`` (one frame a
            step: real time), else 30.
        disable_logger, gc_trigger: accepted for Gymnasium's signature; nothing here logs or collects.
    """

    def __init__(
        self,
        env: gym.Env,
        video_folder: str | Path,
        episode_trigger: Callable[[int], bool] | None = None,
        step_trigger: Callable[[int], bool] | None = None,
        video_length: int = 0,
        name_prefix: str = "rl-video",
        fps: float | None = None,
        disable_logger: bool = True,
        gc_trigger: Callable[[int], bool] | None = None,
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self,
            video_folder=video_folder,
            episode_trigger=episode_trigger,
            step_trigger=step_trigger,
            video_length=video_length,
            name_prefix=name_prefix,
            fps=fps,
            disable_logger=disable_logger,
            gc_trigger=gc_trigger,
        )
        gym.Wrapper.__init__(self, env)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"RecordVideo records rgb_array frames, but the environment's render_mode is {env.render_mode!r}: "
                "make it with render_mode='rgb_array'."
            )
        if not isinstance(video_length, int) or isinstance(video_length, bool) or video_length < 0:
            raise ValueError(f"video_length must be an integer >= 0 (0: whole episodes), got {video_length!r}.")
        require_extra("RecordVideo (mp4 files)", "imageio", "imageio_ffmpeg")
        if episode_trigger is None and step_trigger is None:
            from gymnasium.utils.save_video import capped_cubic_video_schedule

            episode_trigger = capped_cubic_video_schedule
        self.episode_trigger, self.step_trigger = episode_trigger, step_trigger
        self.video_folder = Path(video_folder).resolve()
        self.video_folder.mkdir(parents=True, exist_ok=True)
        self.frames_per_sec = float(fps if fps is not None else self.metadata.get("render_fps", 30))
        self.name_prefix = name_prefix
        self.video_length = video_length if video_length else float("inf")
        self.recording = False
        self.recorded_frames: list[np.ndarray] = []
        self._video_name: str | None = None
        self.step_id = -1
        self.episode_id = -1
        #: The files written so far, in order.
        self.videos: list[Path] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = super().reset(seed=seed, options=options)
        self.episode_id += 1
        if self.recording and self.video_length == float("inf"):
            self.stop_recording()
        if self.episode_trigger and self.episode_trigger(self.episode_id):
            self.start_recording(f"{self.name_prefix}-episode-{self.episode_id}")
        if self.recording:
            self._capture_frame()
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.step_id += 1
        if self.step_trigger and self.step_trigger(self.step_id):
            self.start_recording(f"{self.name_prefix}-step-{self.step_id}")
        if self.recording:
            self._capture_frame()
        return observation, reward, terminated, truncated, info

    def _capture_frame(self) -> None:
        frame = self.env.render()
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
            raise ValueError(
                f"RecordVideo needs (height, width, 3) images from render(), got {type(frame).__name__} "
                f"{getattr(frame, 'shape', '')}."
            )
        self.recorded_frames.append(frame)
        if len(self.recorded_frames) > self.video_length:
            self.stop_recording()

    def start_recording(self, video_name: str) -> None:
        """Starts a recording named ``video_name`` (the file's name without ``.mp4``), writing any open one first."""
        if self.recording:
            self.stop_recording()
        self.recording, self._video_name = True, video_name

    def stop_recording(self) -> None:
        """Writes the open recording's frames to ``{video_folder}/{name}.mp4``."""
        if not self.recording:
            raise RuntimeError("stop_recording() was called, but no recording was started.")
        if self.recorded_frames:
            path = self.video_folder / f"{self._video_name}.mp4"
            write_video(path, self.recorded_frames, self.frames_per_sec)
            self.videos.append(path)
        self.recording, self.recorded_frames, self._video_name = False, [], None

    def close(self) -> None:
        """Closes the environment, then writes the open recording."""
        super().close()
        if self.recording:
            self.stop_recording()
