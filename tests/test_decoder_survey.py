"""baselines/transfer/decoder_survey.py and the pieces it takes from the package: prior latents, motion metrics."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mocapact_envs.evaluation.locomotion import MOTION_METRICS, motion_metrics, root_planar_pose, summarize_motion
from mocapact_envs.policies.low_level import LowLevelPolicy, LowLevelPolicyConfig
from mocapact_envs.wrappers.latent_actions import prior_latents

SURVEY = Path(__file__).resolve().parents[1] / "baselines" / "transfer" / "decoder_survey.py"
KINDS = ("iid", "ar1", "constant", "raw_noise", "raw_zero")


def run_survey(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SURVEY, *map(str, arguments)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )


def test_prior_latents_are_iid_smooth_or_constant():
    rng = np.random.default_rng(0)
    iid = prior_latents(rng, 2000, 4, alpha=0.0)
    smooth = prior_latents(rng, 2000, 4, alpha=0.95)
    constant = prior_latents(rng, 50, 4, alpha=1.0)
    assert iid.dtype == np.float32 and iid.shape == (2000, 4)
    for latents in (iid, smooth):  # standard normal marginals
        assert abs(latents.mean()) < 0.15 and abs(latents.std() - 1) < 0.15
    lag1 = [np.corrcoef(z[:-1, i], z[1:, i])[0, 1] for z in (iid, smooth) for i in range(4)]
    assert max(map(abs, lag1[:4])) < 0.1 and min(lag1[4:]) > 0.85
    assert np.array_equal(constant, np.broadcast_to(constant[0], constant.shape))
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\], got 1.5"):
        prior_latents(rng, 10, 4, alpha=1.5)


def test_motion_metrics_of_a_straight_walk_and_a_turn():
    dt, steps = 0.03, 100
    # 1 m/s along x while the heading turns at 0.5 rad/s.
    positions = np.stack([np.arange(steps + 1) * dt, np.zeros(steps + 1)], axis=1)
    headings = np.angle(np.exp(1j * 0.5 * dt * np.arange(steps + 1)))  # wrapped to (-pi, pi]
    velocities = np.tile([1.0, 0.0], (steps, 1))
    metrics = motion_metrics(
        positions, headings, velocities, fell=False, episode_steps=steps, dt=dt, walk_speed=0.5, walk_steps=33
    )
    assert metrics["steps"] == steps and metrics["walks"]
    for name in ("mean_speed", "net_speed", "best_window_speed"):
        assert metrics[name] == pytest.approx(1.0)
    assert metrics["turn_rate"] == pytest.approx(0.5) and metrics["moving_fraction"] == 1.0
    fallen = motion_metrics(
        positions[:11], headings[:11], velocities[:10], fell=True, episode_steps=steps, dt=dt, walk_speed=0.5,
        walk_steps=33,
    )  # fmt: skip
    assert not fallen["walks"] and fallen["moving_fraction"] == pytest.approx(0.1)
    summary = summarize_motion([metrics, fallen])
    assert summary["fell_fraction"] == 0.5 and summary["walk_fraction"] == 0.5
    assert summary["survivors"]["episodes"] == 1 and summary["survivors"]["steps"]["max"] == steps
    # A quarter turn of the root about the vertical turns its heading by a quarter turn.
    standing = np.array([0, 0, 1, 0.6703, 0.7419, 0.0112, -0.0124])
    standing[3:] /= np.linalg.norm(standing[3:])
    turn = np.array([math.cos(math.pi / 8), 0, 0, math.sin(math.pi / 8)])
    w1, v1, w2, v2 = turn[0], turn[1:], standing[3], standing[4:]
    turned = np.r_[standing[:3], w1 * w2 - v1 @ v2, w1 * v2 + w2 * v1 + np.cross(v1, v2)]
    change = root_planar_pose(turned)[1] - root_planar_pose(standing)[1]
    assert change == pytest.approx(math.pi / 4, abs=1e-6)


def test_survey_runs_every_kind_on_a_random_decoder(tmp_path):
    torch.manual_seed(0)
    decoder = LowLevelPolicy(LowLevelPolicyConfig(latent_size=8, hidden_sizes=(32, 32)))
    rng = np.random.default_rng(0)
    decoder.set_observation_statistics(rng.normal(size=205), rng.uniform(0.5, 2.0, size=205))
    decoder_dir = decoder.save(tmp_path / "decoder")
    json_path, plot_path = tmp_path / "survey.json", tmp_path / "survey.png"
    result = run_survey(
        "--low-level-policy", decoder_dir, "--episodes", 2, "--episode-steps", 30, "--walk-seconds", 0.5,
        "--output-json", json_path, "--plot", plot_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "episodes that walk" in result.stdout
    report = json.loads(json_path.read_text())
    assert report["kinds"] == list(KINDS) and set(report["summary"]) == set(KINDS)
    for kind in KINDS:
        summary = report["summary"][kind]
        assert summary["episodes"] == 2 and len(report["per_episode"][kind]) == 2
        values = [summary["fell_fraction"], summary["walk_fraction"]]
        values += [summary[name][stat] for name in MOTION_METRICS for stat in ("median", "mean", "max")]
        assert all(math.isfinite(v) for v in values), (kind, summary)
        assert all(1 <= e["steps"] <= 30 for e in report["per_episode"][kind])
    assert plot_path.stat().st_size > 0


def test_survey_on_go_to_target_reports_returns_and_target_distances(tmp_path):
    """Episode i spawns the same target for every kind, and reward only comes within the task's 1 m."""
    json_path = tmp_path / "survey.json"
    result = run_survey(
        "--task", "go_to_target", "--kinds", "iid", "raw_zero", "--episodes", 3, "--episode-steps", 30,
        "--walk-seconds", 0.5, "--output-json", json_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(json_path.read_text())
    assert report["env_id"] == "mocapact/GoToTarget-v0"
    starts = {kind: [e["start_target_distance"] for e in report["per_episode"][kind]] for kind in ("iid", "raw_zero")}
    assert starts["iid"] == starts["raw_zero"] and len(set(starts["iid"])) == 3
    for kind, episodes in report["per_episode"].items():
        assert report["summary"][kind]["task_return"]["max"] == max(e["task_return"] for e in episodes)
        for episode in episodes:
            assert 0 <= episode["closest_target_distance"] <= episode["start_target_distance"]
            assert 0 <= episode["task_return"] <= episode["steps"]
            if episode["task_return"] > 0:
                assert episode["closest_target_distance"] <= 1.0 + 1e-6, (kind, episode)
    assert "first target" in result.stdout


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--ar-alpha", 1.0], "--ar-alpha must be in [0, 1), got 1.0"),
        (["--episode-steps", 20, "--walk-seconds", 1.0], "--walk-seconds must be in (0, 0.6]"),
        (["--low-level-policy", "/nonexistent/decoder"], "/nonexistent/decoder"),
    ],
)
def test_survey_names_bad_input(arguments, message):
    result = run_survey(*arguments)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert message in errors[0]
