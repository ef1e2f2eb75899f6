"""The package as a user installs it: the wheel in fresh venvs, used from outside the checkout.

Both tests build venvs (``install_venvs.py``: offline, the locked versions; kept in the cache once built), so
they share one xdist group: one worker builds the project's wheel once for both.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from install_venvs import (
    REPO_ROOT,
    build_project_wheel,
    installed,
    project_requirements,
    project_venv,
    requirement_closure,
    size_mb,
    wheel_requirements,
)
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.xdist_group("install_venvs")
LOCK = REPO_ROOT / "requirements.lock"

#: What the extras install (mocapact_envs/extras.py): none of it may be in the base install.
EXTRA_MODULES = (
    "torch", "stable_baselines3", "sb3_contrib", "tyro", "tensorboard", "matplotlib", "safetensors", "ray", "minari",
    "huggingface_hub", "imageio", "imageio_ffmpeg",
)  # fmt: skip
EXTRA_DISTRIBUTIONS = {
    "torch", "stable-baselines3", "sb3-contrib", "tyro", "tensorboard", "matplotlib", "safetensors", "ray", "minari",
    "huggingface-hub", "imageio", "imageio-ffmpeg",
}  # fmt: skip

ENV_ONLY_SCRIPT = r"""
import importlib.util, json, sys
import numpy as np

extras = {m: importlib.util.find_spec(m) is not None for m in EXTRA_MODULES}
import gymnasium as gym
import mocapact_envs
from gymnasium.envs.registration import registry
from mocapact_envs.extras import MissingExtraError
from mocapact_envs.mocap.source import get_source

available = set(get_source().available_clips())
stepped, refused, lacking_clip = [], {}, []


def step(env, steps=2):
    env.reset(seed=0)
    for _ in range(steps):
        env.step(env.action_space.sample())
    env.close()


for env_id in sorted(i for i in registry if i.startswith("mocapact/")):
    clip = env_id.removeprefix("mocapact/MocapTracking-").removesuffix("-v0")
    if env_id.startswith("mocapact/MocapTracking-CMU_") and clip not in available:
        lacking_clip.append(env_id)  # registered for dm_control's ALL; the shared folder lacks the clip
        continue
    try:
        step(gym.make(env_id))
        stepped.append(env_id)
    except MissingExtraError as error:
        refused[env_id] = str(error)
vector = gym.make_vec("mocapact/MocapTracking-CMU_016_22-v0", num_envs=2, vectorization_mode="vector_entry_point")
vector.reset(seed=0)
vector.step(vector.action_space.sample())
rendered = gym.make("mocapact/MocapTracking-CMU_016_22-v0", render_mode="rgb_array", width=64, height=48)
rendered.reset(seed=0)
frame = rendered.render()
from mocapact_envs.wrappers.video import write_video
for name, call in {
    "write_video": lambda: write_video("episode.mp4", [frame], 30),
    "load_expert": lambda: mocapact_envs.load_expert("pretrained"),
    "low_level_policy": lambda: gym.make("mocapact/GoToTarget-v0", low_level_policy="pretrained"),
    "ExpertDataset": lambda: __import__("mocapact_envs.datasets", fromlist=["ExpertDataset"]).ExpertDataset,
}.items():
    try:
        call()
    except MissingExtraError as error:
        refused[name] = str(error)
print(json.dumps({
    "extras": extras, "package": mocapact_envs.__file__, "prefix": sys.prefix, "stepped": stepped,
    "refused": refused, "lacking_clip": len(lacking_clip), "loaded": sorted({m.split(".")[0] for m in sys.modules}),
    "registered": len([i for i in registry if i.startswith("mocapact/")]), "frame": list(frame.shape),
}))
"""

WHEEL_SCRIPT = r"""
import json, os, sys
import gymnasium as gym
import numpy as np
import mocapact_envs
from mocapact_envs.policies.run_layout import ZooNotFoundError

import baselines

report = {"package": mocapact_envs.__file__, "baselines": baselines.__file__, "prefix": sys.prefix}
expert = mocapact_envs.load_expert("pretrained")
env = gym.make("mocapact/MocapTracking-CMU_016_22-v0")
observation, _ = env.reset(seed=0)
action, _ = expert.predict(observation)
_, reward, terminated, _, _ = env.step(action)
report |= {"expert": expert.snippet_id, "expert_path": str(expert.path), "action_shape": list(action.shape),
           "action_finite": bool(np.isfinite(action).all()), "reward": float(reward), "terminated": bool(terminated)}
transfer = gym.make("mocapact/VelocityControl-v0", low_level_policy="pretrained")
transfer.reset(seed=0)
transfer.step(transfer.action_space.sample())
report |= {"latent_shape": list(transfer.action_space.shape),
           "decoder_latent": transfer.get_wrapper_attr("policy").config.latent_size}
try:
    zoo_expert = mocapact_envs.load_expert("zoo", "CMU_016_22-0-82")
    report["zoo_expert"] = str(zoo_expert.path)
except ZooNotFoundError as error:
    report["zoo_error"] = str(error)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory):
    started = time.perf_counter()
    wheel = build_project_wheel(tmp_path_factory.mktemp("project_wheel"))
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - started:.1f} s")
    return wheel


def outside_checkout(tmp_path, **env: str) -> dict:
    """Settings for a command run outside the checkout: no PYTHONPATH, and the zoo only where ``env`` says."""
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOCAPACT_ZOO")}
    assert not str(tmp_path).startswith(str(REPO_ROOT))
    return {"cwd": tmp_path, "env": environment | env, "capture_output": True, "text": True}


def run_json(python, script: str, tmp_path, **env: str) -> dict:
    result = subprocess.run([python, "-I", "-c", script], **outside_checkout(tmp_path, **env))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_env_only_install_steps_every_environment_without_torch(project_wheel, tmp_path, mocap_folder):
    base = requirement_closure(wheel_requirements(project_wheel))
    assert not set(base) & EXTRA_DISTRIBUTIONS, f"the base install pulls in {set(base) & EXTRA_DISTRIBUTIONS}"
    started = time.perf_counter()
    with project_venv("env-only", [*base, "pip"], project_wheel, first=["pip"]) as venv:
        ready = time.perf_counter() - started
        python = venv / "bin" / "python"
        script = f"EXTRA_MODULES = {EXTRA_MODULES!r}\n" + ENV_ONLY_SCRIPT
        report = run_json(python, script, tmp_path, MOCAPACT_MOCAP_PATH=str(mocap_folder))
        print(f"env-only venv {size_mb(venv):.0f} MB, {len(base)} distributions, ready in {ready:.1f} s")
    assert report["package"].startswith(report["prefix"]), report["package"]  # the wheel's copy, not the checkout
    assert not any(report["extras"].values()), report["extras"]
    assert not set(report["loaded"]) & set(EXTRA_MODULES)
    stepped, refused = set(report["stepped"]), report["refused"]
    # Every generic id, both transfer tasks, and every per-clip id whose clip the shared folder holds.
    assert {"mocapact/MocapTracking-v0", "mocapact/GoToTarget-v0", "mocapact/VelocityControl-v0"} <= stepped
    assert len([i for i in stepped if i.startswith("mocapact/MocapTracking-CMU_")]) >= 70
    refused_ids = [i for i in refused if i.startswith("mocapact/")]
    assert report["lacking_clip"] + len(stepped) + len(refused_ids) == report["registered"]
    assert report["frame"] == [48, 64, 3]
    # What needs an extra says which: motion completion (its prompt expert) and the networks need [train], mp4s [video].
    assert set(refused) == {
        "mocapact/MotionCompletion-v0",
        "mocapact/MotionCompletion-CMU_016_22-v0",
        "load_expert",
        "low_level_policy",
        "ExpertDataset",
        "write_video",
    }
    for name, message in refused.items():
        needs = ("imageio", "video") if name == "write_video" else ("torch", "train")
        assert f"needs {needs[0]}" in message and f"pip install 'mocapact-envs[{needs[1]}]'" in message, message


def test_the_lock_holds_what_every_extra_and_dev_install():
    """make lock resolves [all,dev]: the lock is that closure (and pip), so make install is every extra."""
    closure = set(requirement_closure(project_requirements(), extras=("all", "dev")))
    locked = {canonicalize_name(line.split("==")[0]) for line in LOCK.read_text().splitlines() if "==" in line}
    assert locked - closure == {"pip"} and not closure - locked, (locked - closure, closure - locked)


def test_wheel_install_loads_shipped_models_by_name_and_runs_the_trainers(project_wheel, tmp_path, mocap_folder):
    # Every locked distribution ([all] and dev: this venv's, test_install_lock.py checks they are the lock's).
    locked = sorted(set(installed()) - {canonicalize_name("mocapact-envs")})
    started = time.perf_counter()
    with project_venv("full", locked, project_wheel, first=["pip", "torch"]) as venv:
        ready = time.perf_counter() - started
        python = venv / "bin" / "python"
        mocap = {"MOCAPACT_MOCAP_PATH": str(mocap_folder)}
        report = run_json(python, WHEEL_SCRIPT, tmp_path, **mocap)
        with_zoo = run_json(python, WHEEL_SCRIPT, tmp_path, MOCAPACT_ZOO=str(REPO_ROOT / "zoo"), **mocap)
        helps = {
            str(command[-2]): subprocess.run(command, **outside_checkout(tmp_path, **mocap))
            for command in (
                [python, "-m", "baselines.ppo_expert.train", "--help"],
                [python, "-m", "baselines.distill.train", "--help"],
                [python, "-m", "baselines.ppo_expert.sweep", "--help"],  # imports train.py beside it
                [venv / "bin" / "mocapact-train-expert", "--help"],
                [venv / "bin" / "mocapact-train-transfer", "--help"],
            )
        }
        collect = subprocess.run(
            [venv / "bin" / "mocapact-collect", "zoo", "--output-dir", tmp_path / "rollouts"],
            **outside_checkout(tmp_path, **mocap),
        )
        one_rollout_each = ["--n-start-rollouts", "1", "--n-rsi-rollouts", "1"]
        shipped = subprocess.run(
            [venv / "bin" / "mocapact-collect", "pretrained", "--output-dir", tmp_path / "shipped", *one_rollout_each],
            **outside_checkout(tmp_path, **mocap),
        )
        print(f"full venv {size_mb(venv):.0f} MB, {len(locked)} distributions, ready in {ready:.1f} s")
    site = report["prefix"]
    assert all(report[key].startswith(site) for key in ("package", "baselines", "expert_path")), report
    assert report["expert"] == "CMU_016_22-0-82" and report["action_shape"] == [56] and report["action_finite"]
    assert not report["terminated"] and report["reward"] > 0
    assert report["latent_shape"] == [60] and report["decoder_latent"] == 60
    # Without MOCAPACT_ZOO a wheel install has no zoo: the error says where it looked and how to get one.
    error = report["zoo_error"]
    assert "MOCAPACT_ZOO is not set" in error and f"{site}" in error and "git clone" in error, error
    assert with_zoo["zoo_expert"].startswith(str(REPO_ROOT / "zoo" / "experts" / "CMU_016_22-0-82"))
    for name, result in helps.items():
        assert result.returncode == 0 and "usage:" in result.stdout, (name, result.stdout + result.stderr)
    assert "usage: mocapact-train-expert" in helps[str(venv / "bin" / "mocapact-train-expert")].stdout
    assert collect.returncode == 2 and "MOCAPACT_ZOO is not set" in " ".join((collect.stdout + collect.stderr).split())
    assert shipped.returncode == 0 and (tmp_path / "shipped" / "CMU_016_22.hdf5").is_file(), shipped.stderr
