"""The main job: videos are written and the shipped expert really tracks its clip."""

from __future__ import annotations

import subprocess
import sys

from rich.console import Console

from mocapact_envs.envs.tracking import MocapTrackingEnv
from mocapact_envs.tools.demo import SHIPPED_EXPERTS, choose_policy, run_episode


def test_demo_writes_videos(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mocapact_envs.tools.demo", "--out-dir", str(tmp_path), "--episodes", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "expert policy on CMU_016_22" in result.stdout
    for name in ("CMU_016_22-0-82_reference.mp4", "CMU_016_22-0-82_expert.mp4"):
        assert (tmp_path / name).stat().st_size > 20_000


def test_shipped_expert_tracks_better_than_zero_actions():
    assert (SHIPPED_EXPERTS / "CMU_016_22-0-82").is_dir()
    env = MocapTrackingEnv("CMU_016_22-0-82", random_start=True)
    lengths = {}
    for name in ("expert", "zero"):
        label, policy = choose_policy(name, "CMU_016_22-0-82", Console())
        assert label == ("expert" if name == "expert" else "zero_action")
        lengths[name] = [run_episode(env, policy, seed)[0].norm_episode_length for seed in range(10)]
    assert sum(lengths["expert"]) > 2 * sum(lengths["zero"]), lengths
