"""GPT motion completion on real rollouts: train, complete, compare with the baselines."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from PIL import Image
from tiny_runs import REPO_ROOT, environment, run

from mocapact_envs.datasets import ExpertDataset
from mocapact_envs.mocap.splits import ZOO_CLIP_SETS, resolve_clips, validation_clips, zoo_clips
from mocapact_envs.policies.gpt import GPTConfig, GPTPolicy
from mocapact_envs.policies.run_layout import experts_folder, find_experts
from mocapact_envs.training.run_folder import load_checkpoint

pytestmark = pytest.mark.xdist_group("rollouts")
TRAIN = REPO_ROOT / "baselines" / "gpt" / "train.py"
COMPLETE = REPO_ROOT / "baselines" / "gpt" / "complete.py"
MAX_STEPS = 60


def test_gpt_trains_then_completes_motion(rollouts, experts_root, tmp_path):
    run_dir = tmp_path / "gpt"
    result = run(TRAIN, "--rollouts", rollouts, "--run-dir", run_dir, "--layers", "1", "--heads", "2", "--width", "32",
        "--batch-size", "4", "--context", "8", "--total-steps", "20", "--eval-every", "10", "--eval-episodes", "1",
        "--eval-max-steps", str(MAX_STEPS), "--prompt-experts", experts_root, "--checkpoint-every", "10",
        "--eval-clips", "CMU_016_22")  # fmt: skip
    assert load_checkpoint(run_dir)["step"] == 20
    # Every rollout file trains; only the chosen clip evaluates.
    assert "training on 3 rollout files: 4 snippets of 3 clips" in result.stdout
    assert "evaluating motion completion on 1 clips: CMU_016_22" in result.stdout
    assert GPTPolicy.load(run_dir / "best").config.extra["trained_clips"] == ["CMU_009_01", "CMU_009_12", "CMU_016_22"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    for policy in (run_dir / "best", "zero", "expert"):
        output = tmp_path / f"{policy if isinstance(policy, str) else 'gpt'}.json"
        args = ["--policy", policy, "--prompt-experts", experts_root, "--clips", "CMU_016_22", "CMU_009_12",
                "--episodes", "2", "--max-steps", str(MAX_STEPS), "--output-json", output]  # fmt: skip
        if policy == "zero":
            args += ["--video-dir", tmp_path / "videos"]
        result = run(COMPLETE, *args)
        assert "mean length" in result.stdout
        lengths = json.loads(output.read_text())["lengths"]
        assert set(lengths) == {"CMU_016_22", "CMU_009_12"}
        for values in lengths.values():
            assert len(values) == 2 and all(33 <= v <= MAX_STEPS for v in values)
    assert (tmp_path / "videos" / "CMU_016_22_zero.mp4").stat().st_size > 10_000


def test_motion_completion_env(experts_root):
    env = gym.make("mocapact/MotionCompletion-v0", clips="CMU_009_12", prompt_experts=experts_root, max_steps=45)
    check_env(env.unwrapped, skip_render_check=True)
    observation, info = env.reset(seed=3)
    assert sum(v.size for v in observation.values()) == 206
    assert info["episode_steps"] == 32 and info["prompt_observations"]["walker/joints_pos"].shape == (33, 56)
    np.testing.assert_array_equal(
        info["prompt_observations"]["walker/joints_pos"][-1], observation["walker/joints_pos"]
    )
    start, first, last = info["start_step"], info["prompt_snippet_start"], info["prompt_snippet_end"]
    assert env.unwrapped.prompt_snippet_id == f"CMU_009_12-{first}-{last}"
    # The prompting expert is the one whose snippet covers the start best.
    assert first <= start and start + 32 <= last + 32
    while True:
        observation, reward, terminated, truncated, info = env.step(np.zeros(56, np.float32))
        assert reward == 0.0
        if terminated or truncated:
            break
    # An episode ends on a fall with a tracking error, or at max_steps.
    assert truncated == (info["episode_steps"] == 45)
    assert terminated == (info["tracking_error"] > 0.3 and info["episode_steps"] < 45)
    # Without prompt_experts the shipped experts prompt, and they track CMU_016_22 only.
    with pytest.raises(ValueError, match="no expert under .* tracks CMU_009_12; each clip needs one"):
        gym.make("mocapact/MotionCompletion-v0", clips="CMU_009_12")


def test_gpt_loss_falls_and_is_causal(rollouts):
    torch.manual_seed(0)
    dataset = ExpertDataset([rollouts], "high_level_sans_reference", seq_steps=8)
    policy = GPTPolicy(GPTConfig(context_length=8, layers=2, heads=2, width=32, dropout=0.0))
    policy.set_observation_statistics(dataset.obs_mean, dataset.obs_std)
    observations, actions, weights = (torch.from_numpy(x) for x in dataset.batch(np.arange(0, len(dataset), 7)[:64]))
    changed = observations.clone()
    changed[:, -1] += 1.0
    assert torch.allclose(policy(observations)[:, :-1], policy(changed)[:, :-1], atol=1e-6)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, _ = policy.sequence_loss(observations, actions, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_zoo_clip_sets_split_the_zoo_by_mocapact_validation_clips():
    train, val = zoo_clips("train"), zoo_clips("val")
    zoo = set(find_experts([experts_folder("zoo")]).runs_by_clip)
    assert set(train) | set(val) == zoo and not set(train) & set(val)
    assert set(val) <= validation_clips() and not set(train) & validation_clips()
    assert resolve_clips(["CMU_016_22", "zoo-val", "CMU_016_22"]) == ["CMU_016_22", *val]
    with pytest.raises(ValueError, match="'zoo-vall' is neither a clip id .* clip sets: zoo-train, zoo-val"):
        resolve_clips("zoo-vall")


def test_completion_on_zoo_validation_clips_and_comparison(tmp_path):
    """A total of 3 episodes over the zoo's validation clips, zero and expert, then their comparison."""
    env = environment(COLUMNS="200")
    outputs = {}
    for policy in ("zero", "expert"):
        outputs[policy] = tmp_path / f"{policy}.json"
        run(COMPLETE, "--policy", policy, "--prompt-experts", "zoo", "--clips", "zoo-val", "--total-episodes", "3",
            "--max-steps", str(MAX_STEPS), "--output-json", outputs[policy], env=env)  # fmt: skip
        result = json.loads(outputs[policy].read_text())
        # Round-robin over the clips in order: one episode for each of the first three.
        assert list(result["lengths"]) == zoo_clips("val")[:3] == list(result["per_clip"])
        assert set(result["lengths"]) <= validation_clips()
        assert result["overall"]["n"] == 3 and all(s["n"] == 1 for s in result["per_clip"].values())
        lengths = [v for values in result["lengths"].values() for v in values]
        assert all(33 <= v <= MAX_STEPS for v in lengths)
        assert result["overall"]["mean"] == pytest.approx(np.mean(lengths))
        assert result["overall"]["se"] == pytest.approx(np.std(lengths, ddof=1) / np.sqrt(3))
    comparison, plot = tmp_path / "compare.json", tmp_path / "survival.png"
    shown = run(COMPLETE, "--compare", outputs["zero"], outputs["expert"], "--labels", "zero actions", "expert on",
                "--output-json", comparison, "--plot", plot, env=env)  # fmt: skip
    assert "se of diff" in shown.stdout and "note:" not in shown.stdout
    assert Image.open(plot).size[0] > 300
    zero, expert = json.loads(comparison.read_text())["rows"]
    assert (zero["policy"], expert["policy"]) == ("zero actions", "expert on")
    assert expert["difference"] == pytest.approx(expert["mean"] - zero["mean"])
    assert expert["difference_se"] == pytest.approx(np.hypot(zero["se"], expert["se"]))
    assert expert["paired_se"] is not None  # the same episodes: same seed and clips


def test_completion_names_a_bad_clip_set():
    result = run(COMPLETE, "--policy", "zero", "--prompt-experts", "zoo", "--clips", "zoo-validation", check=False)
    assert result.returncode == 2
    assert (
        f"'zoo-validation' is neither a clip id like 'CMU_016_22' nor a clip set; clip sets: {', '.join(ZOO_CLIP_SETS)}"
        in result.stderr
    )
