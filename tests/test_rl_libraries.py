"""Other RL libraries run the registered ids as they are: torchrl's batched ``GymEnv`` and SB3's vector envs.

Their vector wrappers batch every ``info`` value into tensors or arrays, so each value an environment
reports must be a number or an array of numbers (the snippet tracked is ``info["snippet_index"]``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import mocapact_envs  # noqa: F401  (registers the ids)

#: One registered id of each environment kind, made without arguments.
REGISTERED_IDS = (
    "mocapact/MocapTracking-CMU_016_22-v0",
    "mocapact/GoToTarget-v0",
    "mocapact/VelocityControl-v0",
    "mocapact/MotionCompletion-CMU_016_22-v0",
)


def non_numeric(info: dict, prefix: str = "") -> list[str]:
    """The keys of ``info`` (nested ones as ``a/b``) whose values are not numbers or arrays of numbers."""
    bad = []
    for key, value in info.items():
        if isinstance(value, dict):
            bad += non_numeric(value, f"{prefix}{key}/")
        elif not (isinstance(value, (bool, int, float, np.number)) or np.asarray(value).dtype.kind in "biuf"):
            bad.append(f"{prefix}{key}")
    return bad


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_every_info_value_is_numeric(env_id):
    env = gym.make(env_id)
    _, info = env.reset(seed=0)
    assert not non_numeric(info), non_numeric(info)
    *_, info = env.step(env.action_space.sample())
    assert not non_numeric(info), non_numeric(info)
    env.close()


def test_the_snippet_tracked_is_a_numeric_index():
    env = gym.make("mocapact/MocapTracking-v0", clips=["CMU_016_22", "CMU_009_12-165-363"])
    seen = set()
    for seed in range(6):
        _, info = env.reset(seed=seed)
        assert isinstance(info["snippet_index"], int)
        assert env.unwrapped.snippet_ids[info["snippet_index"]] == env.unwrapped.snippet_id
        seen.add(env.unwrapped.snippet_id)
    assert seen == {"CMU_016_22-0-85", "CMU_009_12-165-363"}
    envs = gym.make_vec("mocapact/MocapTracking-CMU_016_22-v0", num_envs=2, vectorization_mode="vector_entry_point")
    _, info = envs.reset(seed=0)
    assert info["snippet_index"].dtype == np.int64 and envs.snippet_ids == ("CMU_016_22-0-85",)
    envs.close()


# As a user runs them: a script that imports mocapact_envs at its top. Both libraries start their workers
# with spawn or forkserver, which re-import the main script (so the ids are registered in each worker); under
# pytest or in a notebook there is no script to re-import, and the module-prefixed id
# "mocapact_envs:mocapact/..." is what registers them there.
USER_SCRIPT = """
import json
import sys

import numpy as np

import mocapact_envs  # registers the mocapact/ ids, in this process and in every spawned worker


def torchrl_rollouts(env_ids):
    from torchrl.envs import GymEnv

    shapes = {}
    for env_id in env_ids:
        env = GymEnv(env_id, num_envs=2)
        rollout = env.rollout(4, break_when_any_done=False)
        shapes[env_id] = {
            "batch": list(rollout.batch_size),
            "joints_pos": list(rollout["next", "walker/joints_pos"].shape),
            "info_keys": sorted(k for k in rollout["next"].keys() if isinstance(k, str) and "/" not in k),
        }
        if "snippet_index" in shapes[env_id]["info_keys"]:
            shapes[env_id]["snippet_index"] = sorted(set(rollout["next", "snippet_index"].flatten().tolist()))
        env.close()
    return shapes


def sb3_ppo(env_id):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    envs = make_vec_env(env_id, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    model = PPO("MultiInputPolicy", envs, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    envs.reset()
    *_, infos = envs.step(np.zeros((2, 56), np.float32))
    envs.close()
    return {"num_timesteps": model.num_timesteps, "snippet_index": [info["snippet_index"] for info in infos]}


if __name__ == "__main__":
    print(json.dumps({"torchrl": torchrl_rollouts(sys.argv[1:]), "sb3": sb3_ppo(sys.argv[1])}))
"""


def test_torchrl_batched_gym_env_and_sb3_subprocesses_run_the_registered_ids(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT)
    environment = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, script, *REGISTERED_IDS], capture_output=True, text=True, timeout=1200, env=environment
    )
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for env_id in REGISTERED_IDS:
        shapes = report["torchrl"][env_id]
        assert shapes["batch"] == [2, 4] and shapes["joints_pos"] == [2, 4, 56], (env_id, shapes)
        assert "physics_state" in shapes["info_keys"], (env_id, shapes)
    tracking = report["torchrl"][REGISTERED_IDS[0]]
    assert {"snippet_index", "tracking_error", "time_in_clip"} <= set(tracking["info_keys"])
    assert tracking["snippet_index"] == [0]
    assert report["sb3"] == {"num_timesteps": 128, "snippet_index": [0, 0]}


def test_torchrl_batched_gym_env_runs_a_module_prefixed_id_in_process():
    from torchrl.envs import GymEnv

    env = GymEnv("mocapact_envs:mocapact/MocapTracking-CMU_016_22-v0", num_envs=2)
    try:
        rollout = env.rollout(3, break_when_any_done=False)
        assert rollout.batch_size == (2, 3) and (rollout["next", "snippet_index"] == 0).all()
    finally:
        env.close()
