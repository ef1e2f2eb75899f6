"""Clip experts end to end: train, resume, evaluate and load as a user runs them, plus SB3-format experts."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mocapact_envs
from mocapact_envs.envs.factory import make_tracking_env, make_tracking_vec_env
from mocapact_envs.evaluation.protocol import run_episodes
from mocapact_envs.tasks.reference_actions import ReferenceActions

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "baselines" / "ppo_expert" / "train.py"
EVALUATE = REPO_ROOT / "baselines" / "ppo_expert" / "evaluate.py"
COMPARE = REPO_ROOT / "baselines" / "ppo_expert" / "compare.py"
# Tiny: updates of 2 x 128 steps, 32-unit networks, a handful of evaluation episodes; the default
# backend and vector env, as a user gets them.
TINY = [
    "--clip", "CMU_016_22-0-82", "--seed", "3",
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
        # The default preset's experts act around the reference: the file names the snippet and the digest of its
        # reference actions, which come from the mocap source (nothing derived from the clips is stored).
        assert {p.name for p in model_dir.iterdir()} == {"config.json", "model.safetensors", "normalizer.safetensors"}
        config = json.loads((model_dir / "config.json").read_text())
        offset = config["action_offset"]
        assert config["format_version"] == 2 and offset["time_key"] == "walker/time_in_clip"
        assert offset["snippet_id"] == "CMU_016_22-0-82" and offset["num_steps"] == 83
        assert offset["digest"] == ReferenceActions.for_snippet("CMU_016_22-0-82").digest()
        assert config["observation_keys"] == sorted(config["observation_keys"])
        assert sum(config["observation_sizes"]) == 206
        assert np.allclose(config["action_std"], 0.2)  # the default preset's, cpu-wide
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
    # The optimiser carried on (Adam's moments, saved under the network's own keys) and TensorBoard's
    # steps never went back.
    assert set(before["adam"]) == set(before["policy"]) - {"log_std"}
    moments = [s["adam"]["actor_mean.0.weight"]["exp_avg"] for s in (before, after)]
    assert moments[0].abs().sum() > 0 and not torch.equal(*moments)
    events = EventAccumulator(str(first_run / "tb"))
    events.Reload()
    sps_steps = [e.step for e in events.Scalars("charts/SPS")]
    assert sps_steps == sorted(set(sps_steps)) and sps_steps[-1] == after["global_step"]
    assert before["global_step"] in sps_steps
    # Training episodes are logged as means per update, at update steps: an untrained expert's episodes
    # end early, so each update holds several, each shorter than the snippet.
    episodes = events.Scalars("charts/episodes")
    lengths = events.Scalars("charts/norm_episode_length")
    assert {e.step for e in lengths} <= set(sps_steps) and len(lengths) == len(episodes)
    assert all(e.value >= 2 for e in episodes) and all(0 < e.value < 1 for e in lengths)
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
    # Rows by env steps: each evaluation lands in the window holding its step, with its own metric.
    by_steps = run(COMPARE, first_run, "--steps-per-row", "100", "--window", "1", "--plot", plot)
    last = evaluations[-1]
    row = f"{last['global_step'] / 1e6:5.2f}-{last['global_step'] / 1e6:5.2f}M"
    assert row in by_steps.stdout and f"{last['eval_rsi']['mean_norm_episode_length']:14.3f}" in by_steps.stdout
    zero = run(COMPARE, first_run, "--steps-per-row", "0", check=False)
    assert zero.returncode == 2 and "--steps-per-row must be >= 1, got 0" in zero.stderr


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
    # The converted clip's first two steps are broken: an expert cannot start there, so its trainable part is named.
    broken = run(TRAIN, "--clips", "CMU_009_10-0-33", "CMU_016_22-0-500", check=False)
    assert broken.returncode == 2 and "2 of 2 snippet(s) cannot be trained" in broken.stderr
    assert re.search(r"CMU_009_10-0-33: broken steps 0-1\b.*; its trainable part is CMU_009_10-2-33", broken.stderr)
    assert "CMU_016_22-0-500: runs past the end of CMU_016_22" in broken.stderr
    bad_preset = run(TRAIN, "--preset", "gpu", check=False)
    assert bad_preset.returncode != 0 and "gpu" in bad_preset.stderr and "mocapact" in bad_preset.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (
            ["--total-timesteps", "-100", "--gamma", "1.5", "--gae-lambda", "2", "--clip-coef", "-1"],
            ["--total-timesteps -100", "--gamma 1.5", "(0, 1]", "--gae-lambda 2", "[0, 1]", "--clip-coef -1"],
        ),
        (
            ["--learning-rate", "nan", "--num-steps", "0", "--eval-rsi-episodes", "0", "--eval-start-episodes", "0"],
            ["--learning-rate nan", "--num-steps 0", "--eval-rsi-episodes 0", "--eval-start-episodes 0"],
        ),
        (["--minibatch-size", "5000"], ["--minibatch-size 5000", "--num-envs * --num-steps = 2048"]),
        (["--relay-window-steps", "30", "--relay-overlap-steps", "30"], ["--relay-overlap-steps 30", "fewer than"]),
        (
            ["--own-start-probability", "0.5", "--backend", "dm_control", "--own-start-min-age", "0"],
            ["--own-start-probability 0.5: needs the fast backend", "--own-start-min-age 0"],
        ),
        (["--action-likelihood", "squashed"], ["squashed", "gaussian", "clipped"]),
        (
            ["--start-activations", "reference", "--own-start-probability", "0.2"],
            ["--own-start-probability 0.2 and --start-activations reference: each sets the start states"],
        ),
        (
            ["--relay-window-steps", "40", "--relay-handover-probability", "0.5", "--backend", "dm_control"],
            ["--relay-handover-probability 0.5: needs the fast backend", "(--backend 'dm_control')"],
        ),
        (
            ["--push-force", "-5", "--push-probability", "2", "--push-steps", "0"],
            ["--push-force -5", "--push-probability 2", "--push-steps 0"],
        ),
        (
            ["--push-force", "100", "--vectorization-mode", "sync"],
            ["--push-force 100.0: needs the fast backend's native vector env", "--vectorization-mode 'sync'"],
        ),
        (
            ["--own-start-probability", "0.5", "--vectorization-mode", "sync"],
            ["--own-start-probability 0.5: needs the fast backend's native vector env", "(--vectorization-mode 'sync'"],
        ),
    ],
)
def test_bad_trainer_flags_are_named_before_any_work(tmp_path, flags, named):
    result = run(TRAIN, "--clip", "CMU_016_22-0-82", "--log-root", tmp_path, *flags, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    for text in named:
        assert text in result.stderr, result.stderr
    assert not any(tmp_path.iterdir())  # refused before a run folder was written


def test_resume_with_other_learning_settings_is_refused_by_name(first_run, tmp_path):
    shutil.copytree(first_run.parents[1], tmp_path, dirs_exist_ok=True)
    resumed = tmp_path / first_run.relative_to(first_run.parents[1])
    before = checkpoint(resumed)
    result = run(TRAIN, *TINY, "--log-root", tmp_path, "--total-timesteps", "1024", "--gamma", "0.9", check=False)
    assert result.returncode == 2
    assert "--gamma 0.9 (the checkpoint's: 0.99)" in result.stderr and "--no-resume" in result.stderr
    assert checkpoint(resumed)["global_step"] == before["global_step"]  # nothing trained over it


class PlantedPayload:
    """Unpickled, it would run a shell command: what a tampered checkpoint could carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_payload_in_a_resume_checkpoint_does_not_run(first_run, tmp_path):
    # The checkpoint every trainer of baselines/ resumes from (training/run_folder.py), planted with a payload.
    shutil.copytree(first_run.parents[1], tmp_path / "runs")
    state_path = tmp_path / "runs" / first_run.relative_to(first_run.parents[1]) / "checkpoint" / "state.pt"
    state = torch.load(state_path, weights_only=True)
    marker = tmp_path / "payload_ran"
    torch.save({**state, "global_step": PlantedPayload(marker)}, state_path)
    result = run(TRAIN, *TINY, "--log-root", tmp_path / "runs", "--total-timesteps", "1024", check=False)
    assert result.returncode == 2 and f"{state_path} is not a readable checkpoint" in result.stderr
    assert not marker.exists()


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


def test_residual_expert_acts_around_the_reference(first_run, tmp_path):
    """A residual expert whose network outputs 0 plays the reference actions: the servo targets of the next
    reference pose, which keep the humanoid up far longer than zero actions."""
    from safetensors.torch import load_file, save_file

    from mocapact_envs.tasks.reference_actions import pose_to_action

    model_dir = tmp_path / "model"
    shutil.copytree(first_run / "eval_rsi" / "model", model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    last = max(int(key.split(".")[1]) for key in weights if key.startswith("actor_mean."))
    for name in ("weight", "bias"):
        weights[f"actor_mean.{last}.{name}"].zero_()
    save_file(weights, str(model_dir / "model.safetensors"))
    expert = mocapact_envs.load_expert(model_dir)
    reference = ReferenceActions.for_snippet("CMU_016_22-0-82")
    joints = mocapact_envs.mocap.source.get_source().clip_set("CMU_016_22-0-82").reference_features(0)["joints"]

    env = make_tracking_env("CMU_016_22-0-82", random_start=False)
    lengths = {}
    for name, act in (("reference", lambda o: expert.predict(o)[0]), ("zero", lambda o: np.zeros(56, np.float32))):
        observation, _ = env.reset(seed=0)
        for step in range(1, 200):
            action = act(observation)
            if name == "reference":
                np.testing.assert_allclose(action, pose_to_action(joints[step]), atol=1e-6)
            observation, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        lengths[name] = step
    env.close()
    assert reference.num_steps == 83
    assert lengths["reference"] >= 2 * lengths["zero"] and lengths["reference"] >= 20


def test_experts_trained_together_load_and_roll_out(tmp_path):
    """Two snippets in one invocation: each expert in its own MoCapAct run folder, loadable, collectable, both
    trained for the one budget given."""
    snippets = ("CMU_016_22-0-82", "CMU_009_12-0-100")
    budget = ["--total-timesteps", "200"]
    run(TRAIN, *TINY, "--clips", *snippets, "--log-root", tmp_path / "experts", *budget, "--time-features", "4")
    observation = make_tracking_env("CMU_009_12-0-100").reset(seed=0)[0]
    for snippet in snippets:
        run_dir = tmp_path / "experts" / snippet / "3"
        assert json.loads((run_dir / "clip_info.json").read_text())["snippet_id"] == snippet
        expert = mocapact_envs.load_expert(run_dir)
        assert expert.snippet_id == snippet and expert.predict(observation)[0].shape == (56,)
        assert json.loads((run_dir / "eval_rsi" / "model" / "config.json").read_text())["network"]["time_features"] == 4
        assert json.loads((run_dir / "args.json").read_text())["total_timesteps"] == 200
        assert 200 <= checkpoint(run_dir)["global_step"] <= 256  # one update of 256 (autoreset steps not counted)
    collect = [
        "-m", "mocapact_envs.tools.collect", tmp_path / "experts", "--output-dir", tmp_path / "rollouts",
        "--n-start-rollouts", "1", "--n-rsi-rollouts", "1", "--workers", "1",
    ]  # fmt: skip
    run(*collect)
    assert sorted(p.name for p in (tmp_path / "rollouts").glob("*.hdf5")) == ["CMU_009_12.hdf5", "CMU_016_22.hdf5"]


@pytest.mark.parametrize("time_features", [0, 8])
def test_ensemble_computes_each_expert_as_alone(time_features):
    from mocapact_envs.policies.expert_networks import ExpertActorCritic, ExpertEnsemble

    torch.manual_seed(0)
    experts = [
        ExpertActorCritic(206, 56, (32, 32), (32, 32), "tanh", time_features=time_features, time_column=202)
        for _ in range(3)
    ]
    for expert in experts:
        torch.nn.init.normal_(expert.actor_mean[-1].weight, std=0.1)
    ensemble = ExpertEnsemble(experts)
    x, offset = torch.randn(3, 5, 206), torch.randn(3, 5, 56)
    actions, log_prob, _, value = ensemble.action_and_value(x, action_offset=offset)
    for k, expert in enumerate(experts):
        _, expected_log_prob, _, expected_value = expert.action_and_value(x[k], actions[k], offset[k])
        torch.testing.assert_close(log_prob[k], expected_log_prob, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(value[k], expected_value, atol=1e-5, rtol=1e-5)
        assert all(
            torch.equal(a, b)
            for a, b in zip(ensemble.expert(k).state_dict().values(), expert.state_dict().values(), strict=True)
        )
    # Gradient clipping is per expert: a huge loss on expert 0 leaves expert 1's gradient as it was.
    values = ensemble.value(x)
    (values[0].sum() * 1e6 + values[1].sum() * 1e-4).backward()
    before = ensemble.critic.weights[0].grad[1].clone()
    norms = ensemble.clip_grad_norm_(1.0)
    assert norms[0] > 1.0 > norms[1]
    assert torch.equal(ensemble.critic.weights[0].grad[1], before)
    clipped = sum(p.grad[0].pow(2).sum() for p in ensemble.parameters() if p.grad is not None).sqrt()
    assert clipped == pytest.approx(1.0, rel=1e-4)


def test_residual_expert_refuses_other_reference_data(first_run, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(first_run / "eval_rsi" / "model", model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["action_offset"]["digest"] = "sha256:" + "0" * 64
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="differ from those the expert was trained with"):
        mocapact_envs.load_expert(model_dir)


def test_time_features_tell_apart_what_the_time_column_alone_barely_moves():
    """Fourier features of the time column: two observations 1/131 of a snippet apart (one step of a long
    snippet, normalised) reach the first layer as inputs that differ by far more than the column itself does;
    the other columns are untouched, and the expert's config rebuilds the same network."""
    from mocapact_envs.policies.expert_networks import ExpertActorCritic

    expert = ExpertActorCritic(206, 56, (32, 32), (32, 32), "tanh", time_features=16, time_column=202)
    x = torch.zeros(2, 206)
    x[1, 202] = 1 / 131 / 0.29  # one step of a 131-step snippet, over a uniform time's std
    features = expert.input_features(x)
    assert features.shape == (2, 206 + 32) and torch.equal(features[:, :206], x)
    assert (features[1] - features[0]).norm() > 5 * (x[1] - x[0]).norm()
    rebuilt = ExpertActorCritic.from_config(expert.config())
    rebuilt.load_state_dict(expert.state_dict())
    torch.testing.assert_close(rebuilt.mean_action(x), expert.mean_action(x))
    assert list(expert.state_dict()) == list(ExpertActorCritic(206, 56, (32, 32), (32, 32), "tanh").state_dict())
    with pytest.raises(ValueError, match="time_column"):
        ExpertActorCritic(206, 56, (32, 32), (32, 32), "tanh", time_features=4, time_column=206)


def test_expert_that_tracks_the_whole_snippet_stops_early(tmp_path):
    """--early-stop-full-length-evals N: N evaluations in a row at the normalized-length bar (here 0, so every
    evaluation passes) from both starts end training long before the budget, and say why."""
    stop = ["--eval-every-steps", "256", "--early-stop-min-norm-length", "0", "--early-stop-full-length-evals", "2"]
    result = run(TRAIN, *TINY, "--log-root", tmp_path, "--total-timesteps", "100000", *stop)
    run_dir = tmp_path / "CMU_016_22-0-82" / "3"
    assert "stopped early: the whole snippet tracked from both starts in 2 evaluations" in result.stdout
    evaluations = json.loads((run_dir / "evaluations.json").read_text())
    assert len(evaluations) == 2 and checkpoint(run_dir)["global_step"] < 1024


def test_drift_splits_the_shipped_experts_tracking_error_into_root_drift_and_joint_error(tmp_path):
    """drift.py follows real episodes of the shipped expert: its body and joint terms add up to the env's error."""
    expert = REPO_ROOT / "mocapact_envs" / "pretrained" / "experts" / "CMU_016_22-0-82" / "0"
    command = [sys.executable, REPO_ROOT / "baselines" / "ppo_expert" / "drift.py", expert]
    result = subprocess.run(
        [*map(str, command), "--episodes", "2", "--out-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    drift = json.loads((tmp_path / "drift.json").read_text())
    means, columns = np.array(drift["means"]), drift["columns"]
    assert drift["snippet_id"] == "CMU_016_22-0-82" and len(drift["episode_lengths"]) == 2
    assert drift["running"][0] == 2 and drift["running"] == sorted(drift["running"], reverse=True)
    assert len(means) == max(drift["episode_lengths"])
    error, body, joints = (means[:, columns.index(c)] for c in ("tracking_error", "body_error", "joint_error"))
    np.testing.assert_allclose(error, 0.5 * body + 0.5 * joints, atol=1e-4)
    # One step after a reset on the reference pose the root has barely moved off it; the servos' lag shows in the joints.
    assert abs(means[0, columns.index("lag")]) < 0.05 and joints[0] > 0.01
    assert (tmp_path / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "episode lengths: mean" in result.stdout


def test_warm_started_expert_begins_from_the_given_run_and_rolls_out(first_run, tmp_path):
    """``--warm-start``: another snippet of the same clip starts from a trained expert's network and observation
    statistics, with its own step count and its own frozen std; an expert of other networks or a folder without a
    checkpoint is refused."""
    warm = ["--warm-start", first_run, "--total-timesteps", "256"]
    run(TRAIN, *TINY, "--clips", "CMU_016_22-0-60", "--log-root", tmp_path, *warm, "--log-std-init", str(math.log(0.3)))
    run_dir = tmp_path / "CMU_016_22-0-60" / "3"
    before, after = checkpoint(first_run), checkpoint(run_dir)
    assert after["obs_rms"]["count"].item() > 1.9 * before["obs_rms"]["count"].item() > 0  # its statistics went on
    assert 256 <= after["global_step"] < 2 * 256  # its own budget, not the warm start's steps added
    # The source's std was 0.2 (the preset's); this run asked for 0.3, and a frozen std is the run's setting.
    torch.testing.assert_close(before["policy"]["log_std"].exp(), torch.full((56,), 0.2))
    torch.testing.assert_close(after["policy"]["log_std"].exp(), torch.full((56,), 0.3))
    expert = mocapact_envs.load_expert(run_dir)
    observation = make_tracking_env("CMU_016_22-0-60").reset(seed=0)[0]
    assert expert.snippet_id == "CMU_016_22-0-60" and expert.predict(observation)[0].shape == (56,)
    wider = run(TRAIN, *TINY, "--policy-hidden-sizes", "64", "64", "--log-root", tmp_path / "wider", *warm, check=False)
    assert wider.returncode == 2 and "the warm start's expert does not fit" in wider.stderr, wider.stderr
    missing = run(TRAIN, *TINY, "--log-root", tmp_path / "missing", "--warm-start", tmp_path / "nowhere", check=False)
    assert missing.returncode == 2 and f"--warm-start {tmp_path / 'nowhere'}: no state.pt there" in missing.stderr
    corrupt = tmp_path / "corrupt"
    shutil.copytree(first_run, corrupt)
    (corrupt / "checkpoint" / "state.pt").write_bytes(b"not a checkpoint")
    bad = run(TRAIN, *TINY, "--log-root", tmp_path / "bad", "--warm-start", corrupt, check=False)
    assert bad.returncode == 2 and "is not a readable checkpoint" in bad.stderr and "Traceback" not in bad.stderr


def test_clipped_action_likelihood_is_that_of_the_executed_action():
    from torch.distributions import Normal

    from mocapact_envs.policies.expert_networks import clipped_normal_log_prob

    mean = torch.tensor([0.0, 0.95, 1.6, -1.3], requires_grad=True)
    distribution = Normal(mean, torch.full((4,), 0.1))
    actions = torch.tensor([0.05, 1.2, 1.07, -0.98])
    log_prob = clipped_normal_log_prob(distribution, actions, 1.0)
    # Inside the bounds: the density; at or past a bound: the mass the clip sends there.
    assert torch.allclose(log_prob[[0, 3]], distribution.log_prob(actions)[[0, 3]])
    beyond = 1.0 - distribution.cdf(torch.ones(4))
    assert torch.allclose(log_prob[1:3].exp(), beyond[1:3], rtol=1e-5)
    # The executed distribution's masses and density add up to 1 (a mean near the bound, a fine grid).
    grid = torch.linspace(-1.0, 1.0, 20001)[1:-1]
    near = Normal(torch.tensor(0.97), torch.tensor(0.1))
    density = clipped_normal_log_prob(near, grid, 1.0).exp()
    masses = clipped_normal_log_prob(near, torch.tensor([-1.0, 1.0]), 1.0).exp()
    assert float(density.mean() * 2.0 + masses.sum()) == pytest.approx(1.0, abs=1e-3)
    # A mean well past the bound: the clipped sample's likelihood hardly moves with it (no gradient from noise
    # the env never saw), where the Gaussian's density would pull the mean toward the sample.
    log_prob[2].backward()
    assert abs(float(mean.grad[2])) < 1e-3
    assert abs(float(torch.autograd.grad(distribution.log_prob(actions)[2], mean)[0][2])) > 10


def test_own_start_states_are_the_late_states_of_episodes_and_start_new_ones_there():
    """``--own-start-probability``: states kept ``min_age`` or more steps into real episodes, with their step in the
    snippet; a random-start world then begins exactly there."""
    from mocapact_envs.mocap.ids import parse_snippet
    from mocapact_envs.training.start_states import OwnStartStates

    snippet = parse_snippet("CMU_016_22-0-82")
    last_step = snippet.end - snippet.start
    envs = make_tracking_vec_env(snippet.id, 2, "fast", random_start=True, observables="time_index")
    reference = ReferenceActions.for_snippet(snippet.id)
    own = OwnStartStates(snippet, envs.num_envs, min_age=4, every=3, capacity=16)
    observation, info = envs.reset(seed=0)
    resetting, ages, kept_steps = np.zeros(2, bool), np.zeros(2, int), []
    for _ in range(120):
        observation, _, terminated, truncated, info = envs.step(reference.at(observation["walker/time_in_clip"]))
        done = terminated | truncated
        before = own.count
        own.observe(info, done, resetting)
        ages = np.where(resetting, 0, ages + 1)
        steps = np.rint(info["time_in_clip"] * last_step).astype(int)
        due = [w for w in range(2) if not done[w] and not resetting[w] and ages[w] >= 4 and (ages[w] - 4) % 3 == 0]
        assert own.count - before == len(due)
        kept_steps += [steps[w] for w in due]
        resetting = done
    assert len(own) == 16 and own.count > 16  # the reservoir filled and wrapped around
    steps, states = own.starts()
    assert set(steps.tolist()) <= set(kept_steps) and states.shape == (16, info["physics_state"].shape[1])
    envs.unwrapped.set_start_states(steps, states, 1.0)
    _, info = envs.reset(seed=1)
    for world in range(2):
        match = np.flatnonzero(np.all(np.isclose(states, info["physics_state"][world]), axis=1))
        assert len(match), "a world did not start from a kept state"
        assert np.rint(info["time_in_clip"][world] * last_step) == steps[match[0]]
    envs.close()


def test_expert_trains_pushed_from_its_own_late_states_with_the_clipped_likelihood(tmp_path):
    """The long-snippet options end to end as a user runs them: a tiny run on a long snippet that starts episodes
    from its own drifted states, pushes its worlds and takes the clipped actions' likelihood, then loads and rolls
    out."""
    flags = ["--own-start-probability", "0.5", "--own-start-min-age", "2", "--action-likelihood", "clipped"]
    flags += ["--push-force", "200", "--push-probability", "0.1"]
    run(TRAIN, *TINY, "--clips", "CMU_009_12-0-198", "--log-root", tmp_path, "--total-timesteps", "768", *flags)
    run_dir = tmp_path / "CMU_009_12-0-198" / "3"
    saved = json.loads((run_dir / "args.json").read_text())
    assert saved["own_start_probability"] == 0.5 and saved["action_likelihood"] == "clipped"
    assert saved["push_force"] == 200 and saved["push_probability"] == 0.1
    assert checkpoint(run_dir)["global_step"] >= 768
    expert = mocapact_envs.load_expert(run_dir)
    env = make_tracking_env("CMU_009_12-0-198")
    observation, _ = env.reset(seed=0)
    action = expert.predict(observation, deterministic=True)[0]
    assert action.shape == (56,) and np.all(np.abs(action) <= 1.0)
    env.close()


def test_drift_tells_a_turned_walker_from_a_tilted_one():
    """drift.py's heading and tilt errors on a real reference orientation: a turn about the world's vertical is
    heading only; a lean about a horizontal axis is tilt only."""
    import mujoco

    from mocapact_envs.evaluation.root_orientation import heading_and_tilt
    from mocapact_envs.mocap.source import get_source

    reference = get_source().clip_set("CMU_016_22-0-82").reference_features(0)["quaternion"][40]

    def rotated(axis: list[float], degrees: float) -> np.ndarray:
        turn, result = np.empty(4), np.empty(4)
        mujoco.mju_axisAngle2Quat(turn, np.array(axis, np.float64), np.radians(degrees))
        mujoco.mju_mulQuat(result, turn, reference)  # a rotation in the world frame
        return result

    def degrees(quaternion: np.ndarray) -> tuple[float, float]:
        return tuple(float(v) for v in np.degrees(heading_and_tilt(quaternion, reference)))

    assert degrees(reference) == pytest.approx((0.0, 0.0), abs=1e-5)
    assert degrees(rotated([0, 0, 1], 12.0)) == pytest.approx((12.0, 0.0), abs=1e-4)
    assert degrees(rotated([0, 0, 1], -170.0)) == pytest.approx((-170.0, 0.0), abs=1e-4)
    heading, tilt = degrees(rotated([1, 0, 0], 15.0))
    assert tilt == pytest.approx(15.0, abs=0.5) and abs(heading) < 5.0
    # Batched: one row per quaternion, as the trainer computes it for its worlds.
    batch = np.stack([reference, rotated([0, 0, 1], 12.0), rotated([1, 0, 0], 15.0)])
    headings, tilts = heading_and_tilt(batch, np.stack([reference] * 3))
    np.testing.assert_allclose(np.degrees(headings[:2]), [0.0, 12.0], atol=1e-4)
    np.testing.assert_allclose(np.degrees(tilts), [0.0, 0.0, tilt], atol=1e-4)


def test_driven_reference_starts_remove_the_first_steps_pull_of_zero_activations():
    """``--start-activations reference``: worlds start on the reference with the servos' activations at its
    actuation, and the first step under the reference actions then turns the root far less off the reference than
    after dm_control's reset with zero activations."""
    from mocapact_envs.mocap.source import get_source
    from mocapact_envs.tasks.reference_actions import pose_to_action
    from mocapact_envs.training.start_states import driven_reference_states

    snippet = "CMU_009_12-0-198"
    reference = get_source().clip_set(snippet).reference_features(0)
    steps, states = driven_reference_states(reference)
    assert len(steps) == len(reference["joints"]) - 1 and states.shape[1] == 63 + 62 + 56
    np.testing.assert_allclose(states[:, -56:], pose_to_action(reference["joints"][:-1]), atol=1e-6)

    def first_step_root_turn(driven: bool) -> float:
        envs = make_tracking_vec_env(snippet, 4, "fast", random_start=True, observables="time_index")
        if driven:
            envs.unwrapped.set_start_states(steps, states, 1.0)
        angles = []
        for seed in range(5):
            observation, info = envs.reset(seed=seed)
            if driven:
                assert np.allclose(info["physics_state"][:, -56:], pose_to_action(info["physics_state"][:, 7:63]))
            step = np.rint(info["time_in_clip"] * 198).astype(int)
            _, _, _, _, info = envs.step(pose_to_action(reference["joints"][step + 1]))
            for world in range(4):
                cosine = abs(info["physics_state"][world, 3:7] @ reference["quaternion"][step[world] + 1])
                angles.append(2 * np.arccos(min(1.0, cosine)))
        envs.close()
        return float(np.mean(angles))

    zero, driven = first_step_root_turn(False), first_step_root_turn(True)
    assert driven < 0.5 * zero, (driven, zero)


def test_upright_shaping_charges_tilt_and_not_heading():
    """``--upright-reward-weight``: a real step's shaped reward is the env's plus ``weight * (cos(tilt) - 1)``; a
    root turned about the vertical costs nothing, one leaning 60 degrees half the weight."""
    import mujoco

    from mocapact_envs.evaluation.root_orientation import heading_and_tilt
    from mocapact_envs.mocap.ids import parse_snippet
    from mocapact_envs.mocap.source import get_source
    from mocapact_envs.training.reward_shaping import UprightShaping

    snippet = "CMU_009_12-0-198"
    quaternions = get_source().clip_set(snippet).reference_features(0)["quaternion"]
    shaping = UprightShaping(parse_snippet(snippet), quaternions, weight=2.0)
    envs = make_tracking_vec_env(snippet, 3, "fast", random_start=True, observables="time_index")
    observation, info = envs.reset(seed=0)
    for _ in range(15):  # zero actions: the walker sags and tilts off the reference
        _, reward, _, _, info = envs.step(np.zeros((3, 56), np.float32))
    envs.close()
    steps = np.rint(info["time_in_clip"] * 198).astype(int)
    _, tilt = heading_and_tilt(info["physics_state"][:, 3:7], quaternions[steps])
    assert tilt.max() > np.radians(5)
    np.testing.assert_allclose(shaping(reward, info), reward + 2.0 * (np.cos(tilt) - 1.0))

    def turned(axis: list[float], degrees: float) -> np.ndarray:
        rotation, result = np.empty(4), np.empty(4)
        mujoco.mju_axisAngle2Quat(rotation, np.array(axis, np.float64), np.radians(degrees))
        mujoco.mju_mulQuat(result, rotation, quaternions[100])
        return result

    state = np.zeros((2, info["physics_state"].shape[1]))
    state[0, 3:7], state[1, 3:7] = turned([0, 0, 1], 40.0), turned([0, 1, 0], 60.0)
    shaped = shaping(np.zeros(2), {"physics_state": state, "time_in_clip": np.full(2, 100 / 198)})
    # The reference's root is itself a few degrees off vertical, so a lean about a world axis is 60 degrees of tilt
    # to within about 2.
    assert shaped[0] == pytest.approx(0.0, abs=1e-6) and shaped[1] == pytest.approx(-1.0, abs=0.03)


def test_annealed_action_std_follows_its_schedule_and_resumes_on_it(tmp_path):
    """``--log-std-final``: the frozen std moves from --log-std-init toward it, set before each rollout from the env
    steps so far; the update's log and the checkpoint show it, the saved expert holds the std of its evaluation, and a
    resume to a larger budget goes on along the longer schedule; an older checkpoint is not resumed onto a schedule."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    start, final = math.log(0.2), math.log(0.05)
    flags = [*TINY, "--log-root", tmp_path, "--log-std-init", str(start), "--log-std-final", str(final)]
    run_dir = tmp_path / "CMU_016_22-0-82" / "3"
    run(TRAIN, *flags, "--total-timesteps", "1024")  # updates of 2 x 128 steps (autoreset steps do not count)
    first_budget_end = checkpoint(run_dir)["global_step"]
    run(TRAIN, *flags, "--total-timesteps", "2048")  # resumed along the schedule over 2048
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("charts/action_std")]
    # Each update's std comes from the steps before its rollout: the previous update's logged step.
    before = [0] + [step for step, _ in logged[:-1]]
    budgets = [1024 if step <= first_budget_end else 2048 for step, _ in logged]
    expected = [start + (final - start) * min(b / total, 1.0) for b, total in zip(before, budgets, strict=True)]
    np.testing.assert_allclose(np.log([value for _, value in logged]), expected, rtol=1e-5)
    resumed = budgets.index(2048)
    assert resumed >= 3 and len(logged) - resumed >= 3
    assert np.all(np.diff(expected[:resumed]) < 0)
    assert expected[resumed] > expected[resumed - 1]  # the longer budget moves the schedule back
    state = checkpoint(run_dir)
    np.testing.assert_allclose(state["policy"]["log_std"].numpy(), expected[-1], rtol=1e-5)
    # The saved expert is the better of the two evaluations (each at the end of an invocation's budget): the std of
    # the last update before it.
    saved_std = np.log(mocapact_envs.load_expert(run_dir).action_std)
    assert [e["global_step"] for e in state["evaluations"]] == [first_budget_end, state["global_step"]]
    assert np.ptp(saved_std) < 1e-6 and np.isclose(saved_std[0], [expected[resumed - 1], expected[-1]], rtol=1e-5).any()

    both = run(TRAIN, *flags, "--learn-log-std", "True", "--log-root", tmp_path / "other", check=False)
    assert both.returncode == 2 and "--log-std-final -2.99" in both.stderr and "--learn-log-std True" in both.stderr
    # A checkpoint older than the flag trained at a constant std: resuming it on a schedule is refused by name.
    old = tmp_path / "old" / run_dir.relative_to(tmp_path)
    shutil.copytree(run_dir, old)
    older_args = json.loads(state["args"])
    del older_args["log_std_final"]
    torch.save({**state, "args": json.dumps(older_args)}, old / "checkpoint" / "state.pt")
    refused = run(TRAIN, *flags, "--log-root", tmp_path / "old", "--total-timesteps", "4096", check=False)
    assert refused.returncode == 2, refused.stderr
    assert f"--log-std-final {final!r} (the checkpoint's: None)" in refused.stderr, refused.stderr


def test_a_presets_snippet_start_worlds_are_a_share_of_the_worlds_asked_for():
    from test_trainer_conventions import load_script

    train = load_script(TRAIN)

    def worlds(**flags) -> tuple[int, int]:
        resolved = train.resolve_preset(train.Args(**flags))
        return resolved.num_envs, resolved.snippet_start_envs

    assert train.Args().preset == "cpu-wide" and worlds() == (8, 2)
    assert [worlds(num_envs=n) for n in (1, 2, 4, 16)] == [(1, 1), (2, 1), (4, 1), (16, 4)]
    assert worlds(preset="cpu", num_envs=2, snippet_start_envs=None) == (2, 1)
    assert worlds(num_envs=2, snippet_start_envs=0) == (2, 0)  # an explicit flag wins
    assert worlds(preset="cpu") == (4, 1) and worlds(preset="cpu", num_envs=8) == (8, 2)
    assert worlds(preset="mocapact", num_envs=4) == (4, 0)  # MoCapAct has none


def test_cpu_wide_preset_trains_with_its_wider_std_and_larger_updates(tmp_path):
    """``--preset cpu-wide``: updates of its 8 worlds x 256 steps, then an expert whose actions are sampled with std
    0.2 and whose run records the preset's learning rate and worlds (tiny networks and evaluations to stay quick)."""
    small = ["--policy-hidden-sizes", "32", "32", "--value-hidden-sizes", "32", "32", "--update-epochs", "1"]
    evals = ["--eval-every-steps", "100000", "--eval-rsi-episodes", "2", "--eval-start-episodes", "1"]
    flags = ["--clip", "CMU_016_22-0-82", "--seed", "3", "--total-timesteps", "2048", "--log-root", tmp_path]
    run(TRAIN, "--preset", "cpu-wide", *flags, *small, *evals, "--eval-num-envs", "1")
    run_dir = tmp_path / "CMU_016_22-0-82" / "3"
    args = json.loads((run_dir / "args.json").read_text())
    assert (args["num_envs"], args["snippet_start_envs"], args["minibatch_size"]) == (8, 2, 512)
    assert args["learning_rate"] == 1e-4 and args["action_parameterization"] == "reference_residual"
    assert 2048 <= checkpoint(run_dir)["global_step"] < 2 * 2048  # env steps: the autoreset steps do not count
    expert = mocapact_envs.load_expert(run_dir)
    np.testing.assert_allclose(expert.action_std, 0.2, rtol=1e-6)
