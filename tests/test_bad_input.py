"""Bad input gets a clear error naming the bad value (or a clean episode end), never a crash elsewhere."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from tiny_runs import refused_by_baseline

import mocapact_envs
from mocapact_envs.datasets import RolloutFiles
from mocapact_envs.datasets.rollouts import RolloutFileError
from mocapact_envs.envs.factory import clamp_min_steps
from mocapact_envs.mocap.ids import parse_snippet
from mocapact_envs.policies.expert_files import load_expert
from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS, find_experts

RESET_NEEDED = r"step\(\) called with no episode running.*Call reset\(\)"


def run_until_episode_end(env, action) -> tuple[bool, bool]:
    while True:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return terminated, truncated


@pytest.mark.parametrize("backend", ["fast", "dm_control"])
def test_step_after_the_episode_ended_says_reset(backend):
    env = mocapact_envs.MocapTrackingEnv("CMU_016_22-0-40", backend=backend, random_start=False)
    with pytest.raises(RuntimeError, match=RESET_NEEDED):
        env.step(np.zeros(56, np.float32))
    env.reset(seed=0)
    assert any(run_until_episode_end(env, np.zeros(56, np.float32)))
    with pytest.raises(RuntimeError, match=RESET_NEEDED):
        env.step(np.zeros(56, np.float32))
    # A reset starts a new episode as usual.
    env.reset(seed=0)
    assert env.step(np.zeros(56, np.float32))[2:4] == (False, False)


def test_step_after_a_transfer_episode_ended_says_reset():
    env = mocapact_envs.GoToTargetEnv(episode_steps=2)
    env.reset(seed=0)
    assert run_until_episode_end(env, np.zeros(56, np.float32)) == (False, True)
    with pytest.raises(RuntimeError, match=RESET_NEEDED):
        env.step(np.zeros(56, np.float32))


NAN_ACTION = r"the action has NaN at 2 of its 56 entries \(flat indices 3, 17\).*call reset\(\)"


@pytest.mark.parametrize(
    "make",
    [
        lambda: gym.make("mocapact/MocapTracking-CMU_016_22-v0"),
        lambda: gym.make("mocapact/MocapTracking-CMU_016_22-v0", backend="dm_control"),
        lambda: gym.make("mocapact/GoToTarget-v0"),
    ],
    ids=["fast", "dm_control", "go_to_target"],
)
def test_nan_action_is_named_and_ends_the_episode(make):
    env = make()
    env.reset(seed=0)
    action = np.zeros(56, np.float32)
    action[[3, 17]] = np.nan
    with pytest.raises(ValueError, match=NAN_ACTION):
        env.step(action)
    with pytest.raises(RuntimeError, match=RESET_NEEDED):
        env.step(np.zeros(56, np.float32))
    # After a reset the environment steps normally again.
    observation, _ = env.reset(seed=0)
    observation, reward, *_ = env.step(np.zeros(56, np.float32))
    assert np.isfinite(reward) and all(np.isfinite(v).all() for v in observation.values())


def test_nan_action_in_the_vector_env_names_the_world():
    envs = gym.make_vec("mocapact/MocapTracking-CMU_016_22-v0", num_envs=3, vectorization_mode="vector_entry_point")
    with pytest.raises(RuntimeError, match=r"step\(\) called before reset\(\)"):
        envs.step(np.zeros((3, 56), np.float32))
    envs.reset(seed=0)
    actions = np.zeros((3, 56), np.float32)
    actions[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"actions of world\(s\) \[1\]: the action has NaN at 1 of its 56 entries"):
        envs.step(actions)
    with pytest.raises(RuntimeError, match=r"after a step that raised: call reset\(\)"):
        envs.step(np.zeros((3, 56), np.float32))
    envs.reset(seed=0)
    assert np.isfinite(envs.step(np.zeros((3, 56), np.float32))[1]).all()


@pytest.mark.parametrize("threshold", [-1, 0, float("nan")])
def test_termination_threshold_must_be_positive(threshold):
    message = r"termination_error_threshold must be > 0 \(float\('inf'\) never terminates\), got " + str(threshold)
    with pytest.raises(ValueError, match=message):
        gym.make("mocapact/MocapTracking-CMU_016_22-v0", termination_error_threshold=threshold)
    with pytest.raises(ValueError, match=message):
        gym.make_vec(
            "mocapact/MocapTracking-CMU_016_22-v0",
            num_envs=2,
            vectorization_mode="vector_entry_point",
            termination_error_threshold=threshold,
        )
    with pytest.raises(ValueError, match=message):
        gym.make("mocapact/MotionCompletion-CMU_016_22-v0", termination_error_threshold=threshold)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_steps": -3}, r"min_steps must be an integer >= 0, got -3"),
        ({"min_steps": 2.5}, r"min_steps must be an integer >= 0, got 2.5"),
        ({"min_steps": 1000}, r"min_steps=1000 leaves no random start.*CMU_016_22-0-82, allows at most min_steps=81"),
        (
            {"ref_steps": (0, 500)},
            r"ref_steps=\(0, 500\) looks 500 steps ahead, but snippet CMU_016_22-0-82 has only 82",
        ),
        ({"physics_timestep": 0.0}, r"physics_timestep must be > 0 seconds, got 0.0"),
        ({"act_noise": float("nan")}, r"act_noise must be >= 0, got nan"),
        ({"clips": 5}, r"clips must be a clip or snippet id.*got 5 \(int\)"),
        ({"render_mode": "rgb_array", "width": -5}, r"width must be a positive number of pixels, got -5"),
    ],
)
def test_bad_tracking_arguments_are_named(kwargs, message):
    kwargs = {"clips": "CMU_016_22-0-82", **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        gym.make("mocapact/MocapTracking-v0", **kwargs)


def test_min_steps_rule_is_mocapacts():
    # min(min_steps, end - start - max(ref_steps)) - 1: the environment's min_steps that leaves min_steps steps.
    assert clamp_min_steps(parse_snippet("CMU_016_22-0-82"), 30, (1, 2, 3, 4, 5)) == 29
    assert clamp_min_steps(parse_snippet("CMU_016_22-0-20"), 30, (1, 2, 3, 4, 5)) == 14
    assert clamp_min_steps(parse_snippet("CMU_016_22-0-82"), 10) == 9
    with pytest.raises(ValueError, match=r"snippet CMU_016_22-0-4 has 4 steps after its start, too few"):
        clamp_min_steps(parse_snippet("CMU_016_22-0-4"), 30, (1, 2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"min_steps must be an integer >= 1, got 0"):
        clamp_min_steps(parse_snippet("CMU_016_22-0-82"), 0)
    # Every random start then leaves at least min_steps steps before the episode's truncation.
    assert clamp_min_steps(parse_snippet("CMU_016_22-0-20"), 10, (1, 2, 3, 4, 5)) == 9
    env = mocapact_envs.MocapTrackingEnv(
        "CMU_016_22-0-20", ref_steps=(1, 2, 3, 4, 5), min_steps=9, termination_error_threshold=float("inf")
    )
    lengths = set()
    for seed in range(80):
        env.reset(seed=seed)
        steps = 1
        while not env.step(np.zeros(56, np.float32))[3]:
            steps += 1
        lengths.add(steps)
    # Starts 0 to 5 of the 15 trackable steps: episodes of 15 down to 10 steps.
    assert lengths == set(range(10, 16))


@pytest.fixture
def expert_copy(tmp_path) -> Path:
    run = tmp_path / "experts" / "CMU_016_22-0-82"
    shutil.copytree(SHIPPED_EXPERTS / "CMU_016_22-0-82", run)
    return run / "0"


def test_corrupt_expert_config_names_the_file(expert_copy):
    config = expert_copy / "eval_rsi" / "model" / "config.json"
    config.write_text(config.read_text()[:100])  # truncated
    with pytest.raises(ValueError, match=f"{config} is not valid JSON .*corrupt or truncated"):
        load_expert(expert_copy)
    clip_info = expert_copy / "clip_info.json"
    clip_info.write_text("{clip_id: CMU_016_22")
    with pytest.raises(ValueError, match=f"{clip_info} is not valid JSON"):
        find_experts([expert_copy.parent.parent])


def test_truncated_expert_weights_name_the_file(expert_copy):
    weights = expert_copy / "eval_rsi" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file .*corrupt or truncated"):
        load_expert(expert_copy)


def test_other_bad_values_are_named():
    env = mocapact_envs.MocapTrackingEnv("CMU_016_22-0-40")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an array of \(56,\) numbers, got \['a'"):
        env.step(["a"] * 56)
    with pytest.raises(ValueError, match="physics_timestep must be > 0 seconds, got 0"):
        gym.make("mocapact/GoToTarget-v0", physics_timestep=0)
    # The demo CLI says what is wrong instead of printing a traceback.
    result = subprocess.run(
        [sys.executable, "-m", "mocapact_envs.tools.demo", "--clip", "CMU_999_99", "--out-dir", "unused"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: unknown clip id 'CMU_999_99'" in result.stderr


def test_corrupt_shipped_expert_rollouts_is_named(shipped_expert_rollouts, tmp_path):
    assert len(RolloutFiles([shipped_expert_rollouts]).episodes) == 2
    truncated = tmp_path / "CMU_016_22.hdf5"
    truncated.write_bytes(shipped_expert_rollouts.read_bytes()[: shipped_expert_rollouts.stat().st_size // 2])
    with pytest.raises(RolloutFileError, match=f"rollout file {truncated} cannot be opened as HDF5 .*truncated"):
        RolloutFiles([truncated])
    not_hdf5 = tmp_path / "other" / "CMU_016_22.hdf5"
    not_hdf5.parent.mkdir()
    not_hdf5.write_text(json.dumps({"not": "hdf5"}))
    with pytest.raises(RolloutFileError, match=f"rollout file {not_hdf5} cannot be opened"):
        RolloutFiles([not_hdf5.parent])
    # The CLI that reads rollouts says the same, without a traceback.
    result = subprocess.run(
        [sys.executable, "-m", "mocapact_envs.tools.minari_export", str(truncated)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000"},
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert f"rollout file {truncated} cannot be opened as HDF5" in output


REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINES = REPO_ROOT / "baselines"
MISSING = "/nonexistent/mocapact-envs-test"
# Each script, given a path that does not exist, and the text its error names the path with.
BAD_PATHS = {
    "distill train, dataset": (["distill/train.py", "--rollouts", MISSING], f"rollout path {MISSING} does not exist"),
    "distill evaluate, policy": (["distill/evaluate.py", "--policy", MISSING], f"{MISSING} is not a saved"),
    "gpt train, dataset": (["gpt/train.py", "--rollouts", MISSING], f"rollout path {MISSING} does not exist"),
    "gpt complete, policy": (
        ["gpt/complete.py", "--prompt-experts", SHIPPED_EXPERTS, "--policy", MISSING],
        f"{MISSING} is not a saved",
    ),
    "gpt complete, experts": (
        ["gpt/complete.py", "--prompt-experts", MISSING, "--policy", "zero", "--episodes", "1"],
        f"expert folder {MISSING} does not exist",
    ),
    "transfer train, decoder": (
        ["transfer/train.py", "--low-level-policy", MISSING, "--run-dir", MISSING],
        f"{MISSING} is not a saved",
    ),
    "transfer evaluate, policy": (["transfer/evaluate.py", "--policy", MISSING], f"{MISSING} is not a saved"),
    "transfer evaluate, run": (
        ["transfer/evaluate.py", "--compare", MISSING],
        f"no TensorBoard event files in {MISSING}",
    ),
    "expert evaluate": (["ppo_expert/evaluate.py", MISSING], f"no expert at {MISSING}"),
    "expert compare": (["ppo_expert/compare.py", MISSING], MISSING),
    "expert sweep, list": (["ppo_expert/sweep.py", "--snippet-list", f"{MISSING}.txt"], f"{MISSING}.txt"),
}


@pytest.mark.parametrize("case", BAD_PATHS)
def test_baseline_scripts_name_a_missing_path(case):
    arguments, message = BAD_PATHS[case]
    assert message in refused_by_baseline(*arguments)


def test_trainer_names_a_corrupt_checkpoint(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint" / "state.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x80\x02 truncated")
    error = refused_by_baseline("gpt/train.py", "--rollouts", MISSING, "--run-dir", tmp_path / "run")
    assert f"{checkpoint} is not a readable checkpoint" in error


def test_traceback_on_request_for_debugging():
    """MOCAPACT_TRACEBACK=1: the refused input raises with its traceback instead of the one error line."""
    result = subprocess.run(
        [sys.executable, BASELINES / "distill/train.py", "--rollouts", MISSING],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MOCAPACT_TRACEBACK": "1"},
        timeout=600,
    )
    assert result.returncode == 1 and "Traceback" in result.stderr, result.stderr
    assert f"rollout path {MISSING} does not exist" in result.stderr
