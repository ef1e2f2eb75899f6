"""Multi-clip distillation on real rollouts: train, resume, evaluate, export, reuse the decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_runs import REPO_ROOT, run

from mocapact_envs.datasets import ExpertDataset
from mocapact_envs.policies.low_level import LowLevelPolicy
from mocapact_envs.policies.multiclip import MultiClipPolicy, MultiClipPolicyConfig
from mocapact_envs.training.run_folder import load_checkpoint

pytestmark = pytest.mark.xdist_group("rollouts")
TRAIN = REPO_ROOT / "baselines" / "distill" / "train.py"
EVALUATE = REPO_ROOT / "baselines" / "distill" / "evaluate.py"
TINY = ["--hidden-size", "32", "--batch-size", "8", "--seq-steps", "5", "--eval-episodes", "1", "--eval-snippets", "2"]


def test_npmp_trains_resumes_evaluates_and_exports(rollouts, tmp_path):
    run_dir = tmp_path / "npmp"
    first = run(TRAIN, "--rollouts", rollouts, "--run-dir", run_dir, *TINY, "--total-steps", "20", "--eval-every", "10",
                "--checkpoint-every", "10")  # fmt: skip
    assert "done" in first.stdout
    assert load_checkpoint(run_dir)["step"] == 20
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    second = run(TRAIN, "--rollouts", rollouts, "--run-dir", run_dir, *TINY, "--total-steps", "30", "--eval-every", "10",
                 "--checkpoint-every", "10")  # fmt: skip
    assert "resuming" in second.stdout and "at step 20" in second.stdout
    assert load_checkpoint(run_dir)["step"] == 30

    policy = MultiClipPolicy.load(run_dir / "best")
    assert policy.config.kind == "npmp" and len(policy.config.trained_snippets) == 4
    decoder = LowLevelPolicy.load(run_dir / "best" / "low_level_policy")
    base = np.random.default_rng(0).normal(size=(3, 205)).astype(np.float32)
    latent = np.random.default_rng(1).normal(size=(3, 60)).astype(np.float32)
    np.testing.assert_allclose(decoder.act(base, latent), policy.decoder.act(base, latent), rtol=1e-6)

    metrics_path = tmp_path / "metrics.json"
    video = tmp_path / "npmp.mp4"
    run(EVALUATE, "--policy", run_dir / "best", "--episodes", "1", "--output-json", metrics_path, "--video", video)
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics["snippets"]) == set(policy.config.trained_snippets)
    for result in metrics["snippets"].values():
        for kind in ("start", "rsi"):
            assert 0 < result[kind]["mean_norm_episode_length"] <= 1.0
    assert video.stat().st_size > 10_000

    # The exported decoder drives a transfer task through the low-level action wrapper.
    drive = run("-c", (
        "import gymnasium as gym, numpy as np, mocapact_envs\n"
        f"env = gym.make('mocapact/GoToTarget-v0', low_level_policy=r'{run_dir / 'best' / 'low_level_policy'}')\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert env.action_space.shape == (60,), env.action_space\n"
        "for _ in range(5):\n"
        "    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())\n"
        "print('drove', sum(v.size for v in obs.values()))\n"
    ))  # fmt: skip
    assert "drove 227" in drive.stdout


def test_mlp_policy_trains(rollouts, tmp_path):
    run(TRAIN, "--rollouts", rollouts, "--run-dir", tmp_path, "--policy", "mlp", "--weighting", "awr", *TINY,
        "--total-steps", "10", "--eval-every", "10")  # fmt: skip
    assert MultiClipPolicy.load(tmp_path / "best").config.kind == "mlp"
    assert not (tmp_path / "best" / "low_level_policy").exists()


@pytest.mark.parametrize("kind", ["npmp", "mlp"])
def test_loss_falls_on_real_rollouts(rollouts, kind):
    torch.manual_seed(0)
    dataset = ExpertDataset([rollouts], "high_level", seq_steps=5)
    sizes = tuple(s.stop - s.start for s in dataset.observable_slices.values())
    policy = MultiClipPolicy(
        MultiClipPolicyConfig(kind=kind, observation_keys=dataset.observable_keys, observation_sizes=sizes,
                              encoder_hidden_sizes=(64, 64), decoder_hidden_sizes=(64,) * 3, mlp_hidden_sizes=(64,) * 3)
    )  # fmt: skip
    policy.set_observation_statistics(dataset.obs_mean, dataset.obs_std)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    batch = [torch.from_numpy(x) for x in dataset.batch(np.arange(0, len(dataset), max(1, len(dataset) // 32)))]
    losses = []
    for _ in range(40):
        loss, _ = policy.sequence_loss(*batch, kl_weight=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_bad_policy_kind_is_named():
    with pytest.raises(ValueError, match="unknown policy kind 'vae'.*npmp, mlp"):
        MultiClipPolicyConfig(kind="vae", observation_sizes=(1,) * 12)
