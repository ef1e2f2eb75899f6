"""Clip experts end to end: train, resume, evaluate and load as a user runs them, plus SB3-format experts."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mocapact_envs
from mocapact_envs.envs import make_tracking_env, make_tracking_vec_env
from mocapact_envs.evaluation import run_episodes

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "baselines" / "ppo_expert" / "train.py"
EVALUATE = REPO_ROOT / "baselines" / "ppo_expert" / "evaluate.py"
COMPARE = REPO_ROOT / "baselines" / "ppo_expert" / "compare.py"
# Tiny: updates of 2 x 128 steps, 32-unit networks, a handful of evaluation episodes; the default
# backend and vector env, as a user gets them.
TINY = [
    "--clip", "CMU_016_22", "--seed", "3",
    "--num-envs", "2", "--num-steps", "128", "--minibatch-size", "128", "--update-epochs", "2",
    "--policy-hidden-sizes", "32", "32", "--value-hidden-sizes", "32", "32",
    "--eval-every-steps", "100000", "--eval-rsi-episodes", "2", "--eval-start-episodes", "1", "--eval-num-envs", "1",
    "--no-progress-bar",
]  # fmt: skip

pytestmark = pytest.mark.xdist_group("ppo_expert")


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"}
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint" / "state.pt", weights_only=True)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    """One training run stopped by its budget (256 steps: the first update), as a user would start it."""
    log_root = tmp_path_factory.mktemp("experts")
    run(TRAIN, *TINY, "--log-root", log_root, "--total-timesteps", "256")
    return log_root / "CMU_016_22-0-82" / "3"


def test_train_writes_mocapact_layout(first_run):
    assert json.loads((first_run / "clip_info.json").read_text()) == {
        "clip_id": "CMU_016_22",
        "start_step": 0,
        "end_step": 82,
        "snippet_id": "CMU_016_22-0-82",
    }
    for kind in ("eval_rsi", "eval_start"):
        model_dir = first_run / kind / "model"
        assert {p.name for p in model_dir.iterdir()} == {"config.json", "model.safetensors", "normalizer.safetensors"}
        config = json.loads((model_dir / "config.json").read_text())
        assert config["observation_keys"] == sorted(config["observation_keys"])
        assert sum(config["observation_sizes"]) == 206
        assert np.allclose(config["action_std"], 0.1)
    assert list((first_run / "tb").glob("events.out.tfevents.*"))
    state = checkpoint(first_run)  # loads with weights_only=True: no pickled objects
    # Steps that only autoreset are not counted, so 256 real steps take more than one update of 256.
    assert 256 <= state["global_step"] < 512 and state["update"] >= 1


def test_resume_continues_from_checkpoint(first_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # A copy, so the other tests see the first run as it was whatever the order.
    shutil.copytree(first_run.parents[1], tmp_path, dirs_exist_ok=True)
    first_run = tmp_path / first_run.relative_to(first_run.parents[1])
    before = checkpoint(first_run)
    result = run(TRAIN, *TINY, "--log-root", tmp_path, "--total-timesteps", "1024")
    assert f"resuming {first_run} from step {before['global_step']:,} (update {before['update']})" in result.stdout
    after = checkpoint(first_run)
    assert after["update"] > before["update"] and 1024 <= after["global_step"]
    assert [e["global_step"] for e in after["evaluations"]] == [before["global_step"], after["global_step"]]
    # The optimiser carried on (Adam's step count) and TensorBoard's steps never went back.
    adam_steps = [int(next(iter(s["optimizer"]["state"].values()))["step"]) for s in (before, after)]
    assert adam_steps[1] > adam_steps[0]
    events = EventAccumulator(str(first_run / "tb"))
    events.Reload()
    sps_steps = [e.step for e in events.Scalars("charts/SPS")]
    assert sps_steps == sorted(set(sps_steps)) and sps_steps[-1] == after["global_step"]
    assert before["global_step"] in sps_steps
    # A finished run is left alone.
    again = run(TRAIN, *TINY, "--log-root", tmp_path, "--total-timesteps", "1024")
    assert "nothing to do" in again.stdout
    assert checkpoint(first_run)["global_step"] == after["global_step"]


def test_evaluate_and_load_trained_expert(first_run, tmp_path):
    out = tmp_path / "evaluation"
    result = run(
        EVALUATE, first_run, "--rsi-episodes", "2", "--start-episodes", "1", "--num-envs", "1",
        "--video-size", "160", "120", "--out-dir", out,
    )  # fmt: skip
    assert "eval_rsi" in result.stdout and "eval_start" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clip"] == "CMU_016_22-0-82"
    assert metrics["summary"]["eval_rsi"]["episodes"] == 2 and metrics["summary"]["eval_start"]["episodes"] == 1
    assert (out / "video.mp4").stat().st_size > 0
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "episode_ends.png").read_bytes()[:4] == b"\x89PNG"
    for episode in metrics["episodes"]["eval_rsi"] + metrics["episodes"]["eval_start"]:
        # Each episode ends after it starts, inside the clip; start-of-snippet episodes start at 0.
        assert 0.0 <= episode["start_time_in_clip"] < episode["end_time_in_clip"] <= 1.0 + 1e-9
    assert metrics["episodes"]["eval_start"][0]["start_time_in_clip"] == 0.0

    # Loading as a user does, from the run, eval and model folders.
    paths = [str(first_run), str(first_run / "eval_rsi"), str(first_run / "eval_start" / "model")]
    load = (
        "import sys, mocapact_envs, gymnasium as gym\n"
        "observation = gym.make('mocapact/MocapTracking-CMU_016_22-v0').reset(seed=0)[0]\n"
        "for path in sys.argv[1:]:\n"
        "    expert = mocapact_envs.load_expert(path)\n"
        "    action, state = expert.predict(observation, deterministic=True)\n"
        "    print(type(expert).__name__, expert.snippet_id, action.shape, state)\n"
    )
    lines = run("-c", load, *paths).stdout.splitlines()
    assert lines == ["Expert CMU_016_22-0-82 (56,) None"] * 3


def test_compare_plots_runs_and_names_bad_labels(first_run, tmp_path):
    plot = tmp_path / "curves.png"
    result = run(COMPARE, first_run, first_run, "--labels", "first", "again", "--plot", plot)
    evaluations = json.loads((first_run / "evaluations.json").read_text())
    for label in ("first", "again"):
        assert f"{label}: {len(evaluations)} evaluations to step {evaluations[-1]['global_step']:,}" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
    bad = run(COMPARE, first_run, "--labels", "first", "again", check=False)
    assert bad.returncode == 2 and "--labels has 2 entries for 1 runs" in bad.stderr
    missing = run(COMPARE, tmp_path, check=False)
    assert missing.returncode == 2 and str(tmp_path / "evaluations.json") in missing.stderr


def test_loaded_expert_predicts_single_and_batched(first_run):
    expert = mocapact_envs.load_expert(first_run)
    assert expert.path == first_run / "eval_rsi" / "model"
    envs = make_tracking_vec_env("CMU_016_22", 2, backend="dm_control", vectorization_mode="sync")
    observation, _ = envs.reset(seed=0)
    batch, _ = expert.predict(observation)
    single, _ = expert.predict({k: v[1] for k, v in observation.items()})
    envs.close()
    assert batch.shape == (2, 56) and np.allclose(batch[1], single, atol=1e-6)
    assert np.all(np.abs(batch) <= 1)


def test_bad_clip_and_preset_are_named():
    bad_clip = run(TRAIN, "--clip", "CMU_016_99", check=False)
    assert bad_clip.returncode != 0 and "CMU_016_99" in bad_clip.stderr
    bad_preset = run(TRAIN, "--preset", "gpu", check=False)
    assert bad_preset.returncode != 0 and "gpu" in bad_preset.stderr and "mocapact" in bad_preset.stderr


def test_run_episodes_matches_single_env_episodes():
    """Next-step autoreset: the step that only resets is neither counted nor rewarded."""
    zero = np.zeros(56, np.float32)
    envs = make_tracking_vec_env("CMU_016_22", 1, backend="dm_control", vectorization_mode="sync")
    episodes = run_episodes(envs, lambda obs: zero[None], 3, seed=0)
    envs.close()
    env = make_tracking_env("CMU_016_22", backend="dm_control")
    expected = []
    env.reset(seed=0)
    while len(expected) < 2 * 3:
        episode_return, length, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(zero)
            episode_return, length, done = episode_return + reward, length + 1, terminated or truncated
        expected += [length, episode_return]
        env.reset()
    env.close()
    assert [x for e in episodes for x in (e.episode_length, e.episode_return)] == pytest.approx(expected)


def test_sb3_expert_loads_without_unpickling_the_zip(tmp_path, monkeypatch):
    """An SB3 PPO("MultiInputPolicy") expert saved as MoCapAct's are loads and acts as SB3 does."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from mocapact_envs.policies.sb3_compat import MOCAPACT_TIME_INDEX_KEYS, ConcatKeysExtractor

    class CmuHumanoidFeaturesExtractor(ConcatKeysExtractor):
        """Named as MoCapAct's extractor: the loader maps it by name."""

    vec_env = VecNormalize(DummyVecEnv([lambda: make_tracking_env("CMU_016_22", backend="dm_control")]), gamma=0.95)
    mocapact_like = dict(
        net_arch=dict(pi=[16, 16], vf=[16, 16]),
        activation_fn=torch.nn.Tanh,
        features_extractor_class=CmuHumanoidFeaturesExtractor,
        features_extractor_kwargs=dict(observable_keys=list(MOCAPACT_TIME_INDEX_KEYS)),
    )
    for name, policy_kwargs in (("default", dict(net_arch=[16])), ("mocapact", mocapact_like)):
        model = PPO(
            "MultiInputPolicy", vec_env, n_steps=32, batch_size=32, n_epochs=1, seed=0, policy_kwargs=policy_kwargs
        )
        model.learn(64)
        model_dir = tmp_path / name / "eval_rsi" / "model"
        model_dir.mkdir(parents=True)
        model.save(model_dir / "best_model.zip")
        vec_env.save(model_dir / "vecnormalize.pkl")
        # The same statistics as gym < 0.24 and NumPy 1.x name their classes.
        legacy = pickle.dumps(vec_env, protocol=2)
        for new, old in ((b"cgymnasium.spaces.", b"cgym.spaces."), (b"cnumpy._core.", b"cnumpy.core.")):
            assert new in legacy
            legacy = legacy.replace(new, old)
        legacy_dir = tmp_path / f"{name}_legacy"
        legacy_dir.mkdir()
        (legacy_dir / "best_model.zip").write_bytes((model_dir / "best_model.zip").read_bytes())
        (legacy_dir / "vecnormalize.pkl").write_bytes(legacy)

        observation, _ = make_tracking_env("CMU_016_22", backend="dm_control").reset(seed=1)
        expected, _ = model.predict(vec_env.normalize_obs(observation), deterministic=True)
        with monkeypatch.context() as patch:
            import cloudpickle

            def refuse(*args, **kwargs):
                raise AssertionError("the loader unpickled an entry of best_model.zip")

            patch.setattr(cloudpickle, "loads", refuse)
            for path in (tmp_path / name, legacy_dir):
                expert = mocapact_envs.load_expert(path)
                action, state = expert.predict(observation, deterministic=True)
                assert state is None
                np.testing.assert_allclose(action, expected, atol=1e-6)
                batch, _ = expert.predict({k: np.stack([v, v]) for k, v in observation.items()})
                np.testing.assert_allclose(batch, np.stack([expected, expected]), atol=1e-6)


def test_vecnormalize_unpickler_refuses_other_globals(tmp_path):
    from mocapact_envs.policies.sb3_compat import load_vecnormalize

    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        load_vecnormalize(path)


def test_load_expert_names_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="best_model.zip"):
        mocapact_envs.load_expert(tmp_path)
