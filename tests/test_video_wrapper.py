"""mocapact_envs.wrappers.video.RecordVideo: Gymnasium's RecordVideo with the locked dependencies (imageio's ffmpeg,
no moviepy), recording real episodes to mp4 files of the right frames and duration."""

from __future__ import annotations

import gymnasium as gym
import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest

import mocapact_envs  # noqa: F401  (registers the ids)
from mocapact_envs.wrappers.video import RecordVideo

TRACKING = "mocapact/MocapTracking-CMU_016_22-v0"
SIZE = {"width": 160, "height": 120}


def frames_and_seconds(path) -> tuple[int, float]:
    return imageio_ffmpeg.count_frames_and_secs(str(path))


def test_gymnasiums_record_video_needs_moviepy_which_the_lock_lacks(tmp_path):
    with pytest.raises(gym.error.DependencyNotInstalled, match="(?i)moviepy is not installed"):
        gym.wrappers.RecordVideo(gym.make(TRACKING, render_mode="rgb_array"), tmp_path)


def test_an_expert_episode_is_recorded_whole(tmp_path):
    from mocapact_envs.policies.expert_files import load_expert

    expert = load_expert("pretrained")
    env = RecordVideo(
        gym.make(TRACKING, render_mode="rgb_array", random_start=False, **SIZE),
        tmp_path / "videos",
        episode_trigger=lambda episode: episode in (0, 2),
        name_prefix="expert",
    )
    lengths, first_frames = [], []
    for episode in range(3):
        observation, _ = env.reset(seed=episode)
        first_frames.append(env.render())
        steps = 0
        while True:
            action, _ = expert.predict(observation, deterministic=True)
            observation, _, terminated, truncated, _ = env.step(action)
            steps += 1
            if terminated or truncated:
                break
        lengths.append(steps)
    env.close()  # episode 2's recording is written on close
    assert [p.name for p in env.videos] == ["expert-episode-0.mp4", "expert-episode-2.mp4"]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["expert-episode-0.mp4", "expert-episode-2.mp4"]
    fps = env.unwrapped.metadata["render_fps"]
    assert env.frames_per_sec == fps == pytest.approx(1 / 0.03)
    for path, steps, first in zip(
        env.videos, (lengths[0], lengths[2]), (first_frames[0], first_frames[2]), strict=True
    ):
        assert steps > 30  # the shipped expert tracks most of the clip
        frames, seconds = frames_and_seconds(path)
        # The reset's frame and one a step, one frame a control step: the episode in real time.
        assert frames == steps + 1, (path.name, frames, steps)
        assert seconds == pytest.approx((steps + 1) / fps, abs=0.05)
        video = iio.imread(path, index=None)
        assert video.shape == (steps + 1, SIZE["height"], SIZE["width"], 3)
        assert np.abs(video[0].astype(float) - first).mean() < 6  # the frame rendered, as H.264 keeps it


def test_step_trigger_and_video_length_record_fixed_length_clips(tmp_path):
    env = RecordVideo(
        gym.make(TRACKING, render_mode="rgb_array", **SIZE),
        tmp_path,
        step_trigger=lambda step: step % 50 == 0,
        video_length=20,
        fps=10,
    )
    env.reset(seed=0)
    for _ in range(120):
        _, _, terminated, truncated, _ = env.step(np.zeros(56, np.float32))
        if terminated or truncated:
            env.reset()
    env.close()
    assert [p.name for p in env.videos] == ["rl-video-step-0.mp4", "rl-video-step-50.mp4", "rl-video-step-100.mp4"]
    for path in env.videos:  # as Gymnasium's: a recording stops once it holds more than video_length frames
        frames, seconds = frames_and_seconds(path)
        assert frames == 21 and seconds == pytest.approx(2.1, abs=0.05)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"RecordVideo records rgb_array frames, but the environment's render_mode "
                       r"is None: make it with render_mode='rgb_array'\."):  # fmt: skip
        RecordVideo(gym.make(TRACKING), tmp_path)
    with pytest.raises(ValueError, match=r"render_mode is 'depth_array'"):
        RecordVideo(gym.make(TRACKING, render_mode="depth_array"), tmp_path)
    with pytest.raises(ValueError, match=r"video_length must be an integer >= 0 \(0: whole episodes\), got -1"):
        RecordVideo(gym.make(TRACKING, render_mode="rgb_array"), tmp_path, video_length=-1)
