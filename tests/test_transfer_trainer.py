"""Smoke tests of baselines/transfer: train and evaluate as a user runs them, resume, and the pickle-free policy."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro

from mocapact_envs.policies.low_level import LowLevelPolicy, LowLevelPolicyConfig
from mocapact_envs.training.run_folder import load_checkpoint
from mocapact_envs.training.task_policies import (
    load_task_policy,
    make_transfer_vec_env,
    read_learning_curve,
    resolve_task,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN, EVALUATE = REPO_ROOT / "baselines/transfer/train.py", REPO_ROOT / "baselines/transfer/evaluate.py"
EPISODE_STEPS = 40
# Tiny everything: two 128-step updates, an evaluation after each.
TINY = [
    "--total-timesteps", "256", "--steps-per-update", "128", "--batch-size", "64", "--n-epochs", "1",
    "--hidden-sizes", "16", "16", "--value-hidden-sizes", "16", "16", "--eval-every-steps", "128",
    "--eval-episodes", "2", "--eval-envs", "1", "--episode-steps", str(EPISODE_STEPS), "--no-progress-bar",
]  # fmt: skip
# One worker for these (they compete for the 2 cores). pytest 9.2 ignores the group, though (pytest-xdist
# 3.8 sets item._nodeid, which pytest no longer reads): so tests share no trained run, and none trains twice.
pytestmark = pytest.mark.xdist_group("transfer_trainer")


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO_ROOT, env=os.environ.copy(), capture_output=True, text=True
    )


def run_ok(script: Path, *args: str) -> str:
    result = run(script, *args)
    assert result.returncode == 0, f"{script.name} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory) -> Path:
    """A randomly initialised decoder, latent 20 (MoCapAct's locomotion size), small hidden layers."""
    torch.manual_seed(0)
    policy = LowLevelPolicy(LowLevelPolicyConfig(latent_size=20, hidden_sizes=(32, 32)))
    return policy.save(tmp_path_factory.mktemp("decoder"))


def train(run_dir: Path, task: str, decoder_dir: Path | None, *extra: str) -> str:
    flags = ["--low-level-policy", str(decoder_dir)] if decoder_dir else []
    return run_ok(TRAIN, "--task", task, "--run-dir", str(run_dir), *flags, *TINY, *extra)


def check_run(run_dir: Path, task: str, low_level: bool) -> None:
    """The files, checkpoint and logs a finished 256-step run has."""
    for kind in ("best_policy", "final_policy"):
        config = json.loads((run_dir / kind / "config.json").read_text())
        assert config["format"] == "mocapact_envs.task_policy" and config["algo"] == "ppo"
        assert config["env"]["env_id"] == resolve_task(task)
        assert config["env"]["env_kwargs"] == {"episode_steps": EPISODE_STEPS}
        assert (config["env"]["low_level_policy"] is not None) == low_level
        assert (run_dir / kind / "low_level_policy" / "config.json").is_file() == low_level
        assert (run_dir / kind / "model.safetensors").is_file() and (run_dir / kind / "vec_normalize.json").is_file()
        assert not list((run_dir / kind).glob("*.pkl")) and not list((run_dir / kind).glob("*.zip"))
    assert config["action_space"]["shape"] == [20 if low_level else 56]
    expected_std = 2.5 if low_level else 0.5  # MoCapAct's initial action std
    assert config["policy_kwargs"]["log_std_init"] == pytest.approx(np.log(expected_std))

    checkpoint = load_checkpoint(run_dir)  # loads with weights_only=True: no pickled objects
    assert checkpoint["num_timesteps"] == 256 and json.loads(checkpoint["args"])["task"] == resolve_task(task)
    assert {p.name for p in (run_dir / "checkpoint").iterdir()} == {"state.pt"}
    curve = read_learning_curve(run_dir)
    assert curve["steps"].tolist() == [128, 256]
    assert np.all(curve["minutes"] > 0)
    assert np.all((curve["mean_length"] >= 1) & (curve["mean_length"] <= EPISODE_STEPS))
    evaluations = json.loads((run_dir / "evaluations.json").read_text())["evaluations"]
    assert [e["num_timesteps"] for e in evaluations] == [128, 256]
    assert evaluations[-1]["mean_return"] == pytest.approx(curve["mean_return"][-1], rel=1e-6)


def test_go_to_target_train_evaluate_plot_and_resume(tmp_path, decoder_dir):
    raw, low_level = tmp_path / "gtt_raw", tmp_path / "gtt_ll"
    train(raw, "go_to_target", None, "--n-envs", "1")
    train(low_level, "go_to_target", decoder_dir, "--n-envs", "1")
    check_run(raw, "go_to_target", low_level=False)
    check_run(low_level, "go_to_target", low_level=True)

    out = run_ok(
        EVALUATE,
        *("--policy", str(low_level), "--episodes", "2", "--json-out", str(tmp_path / "eval.json")),
        *("--video", str(tmp_path / "video.mp4"), "--video-size", "64", "48"),
        *("--compare", str(low_level), str(raw), "--labels", "low-level", "raw", "--plot", str(tmp_path / "c.png")),
    )
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["episodes"] == 2 and results["low_level_policy"] and results["policy"].endswith("best_policy")
    assert 1 <= results["mean_length"] <= EPISODE_STEPS
    assert "return" in out and "low-level: 2 evaluations" in out and "raw: 2 evaluations" in out
    # The late level: the evaluations of the second half of the run's wall-clock minutes.
    logged = json.loads((raw / "evaluations.json").read_text())["evaluations"]
    late = [e["mean_return"] for e in logged if e["training_minutes"] >= logged[-1]["training_minutes"] / 2]
    assert f"second half mean {np.mean(late):.2f}" in out and f"{len(late)} evaluations)" in out
    import imageio.v2 as imageio

    frames = imageio.mimread(tmp_path / "video.mp4")
    assert len(frames) >= 2 and frames[0].shape == (48, 64, 3)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Rerunning with twice the budget continues the step counter, the logs and the clock.
    out = train(raw, "go_to_target", None, "--n-envs", "1", "--total-timesteps", "512")
    assert "resuming" in out and "from step 256" in out
    assert load_checkpoint(raw)["num_timesteps"] == 512
    assert read_learning_curve(raw)["steps"].tolist() == [128, 256, 384, 512]
    evaluations = json.loads((raw / "evaluations.json").read_text())["evaluations"]
    assert [e["num_timesteps"] for e in evaluations] == [128, 256, 384, 512]
    minutes = [e["training_minutes"] for e in evaluations]
    assert minutes == sorted(minutes), "training minutes add up across resumes"
    assert "nothing to do" in train(raw, "go_to_target", None, "--n-envs", "1", "--total-timesteps", "512")


def test_velocity_control_train_evaluate_and_reload(tmp_path, decoder_dir):
    raw, low_level = tmp_path / "vc_raw", tmp_path / "vc_ll"
    train(raw, "mocapact/VelocityControl-v0", None, "--n-envs", "1")  # the env id works as well as the name
    train(low_level, "velocity_control", decoder_dir, "--n-envs", "2")  # subprocess workers
    check_run(raw, "velocity_control", low_level=False)
    check_run(low_level, "velocity_control", low_level=True)
    out = run_ok(EVALUATE, "--policy", str(raw / "final_policy"), "--episodes", "1")
    assert "VelocityControl" in out and "raw actions" in out

    # --max-minutes counts training minutes across resumes, and stops between updates.
    minutes = json.loads((raw / "evaluations.json").read_text())["evaluations"][-1]["training_minutes"]
    out = train(raw, "velocity_control", None, "--n-envs", "1", "--total-timesteps", "100000", "--max-minutes",
                f"{minutes + 0.01:.4f}")  # fmt: skip
    steps = load_checkpoint(raw)["num_timesteps"]
    assert "--max-minutes reached" in out and 256 < steps < 100_000

    sb3_actions, loaded_actions = sb3_and_loaded_actions(low_level)
    assert loaded_actions.shape == (12, 20)
    np.testing.assert_array_equal(loaded_actions, sb3_actions)
    assert np.abs(np.diff(loaded_actions, axis=0)).max() > 0, "actions depend on the observation"

    # A folder saved before the one policy-folder convention kept its weights in policy.safetensors: it still loads.
    legacy = tmp_path / "legacy_policy"
    shutil.copytree(low_level / "final_policy", legacy)
    (legacy / "model.safetensors").rename(legacy / "policy.safetensors")
    observation, _ = load_task_policy(legacy).make_env().reset(seed=3)
    np.testing.assert_array_equal(
        load_task_policy(legacy).predict(observation)[0],
        load_task_policy(low_level / "final_policy").predict(observation)[0],
    )


def sb3_and_loaded_actions(run_dir: Path, steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic actions of SB3's own model (rebuilt from the checkpoint, VecNormalize) and of load_task_policy."""
    from stable_baselines3.common.vec_env import VecNormalize

    loaded = load_task_policy(run_dir / "final_policy")
    checkpoint = load_checkpoint(run_dir)
    env_config = loaded.config["env"]
    low_level = None if env_config["low_level_policy"] is None else loaded.directory / env_config["low_level_policy"]
    normalizer = VecNormalize(
        make_transfer_vec_env(env_config["env_id"], 1, low_level, vec_env="dummy", **env_config["env_kwargs"]),
        training=False,
    )
    trainer = load_script(TRAIN)
    saved_args = trainer.Args(**json.loads(checkpoint["args"]))
    model = trainer.model_from_checkpoint(saved_args, checkpoint, normalizer, "the checkpoint")
    env = loaded.make_env()
    observation, _ = env.reset(seed=3)
    sb3_state = loaded_state = None
    start = np.ones((1,), dtype=bool)
    sb3_actions, loaded_actions = [], []
    for _ in range(steps):
        sb3_action, sb3_state = model.predict(normalizer.normalize_obs(observation), sb3_state, start, True)
        action, loaded_state = loaded.predict(observation, loaded_state, start)
        sb3_actions.append(sb3_action)
        loaded_actions.append(action)
        observation, _, terminated, truncated, _ = env.step(action)
        start = np.array([terminated or truncated])
        if start[0]:
            observation, _ = env.reset()
    normalizer.close()
    return np.array(sb3_actions), np.array(loaded_actions)


@pytest.mark.parametrize("algo", ["recurrent_ppo", "tqc"])
def test_sb3_contrib_algorithms_train_and_reload(tmp_path, decoder_dir, algo):
    run_dir = tmp_path / algo
    extra = ["--lstm-hidden-size", "8"] if algo == "recurrent_ppo" else ["--learning-starts", "64"]
    run_ok(
        TRAIN, "--task", "go_to_target", "--algo", algo, "--low-level-policy", str(decoder_dir),
        "--run-dir", str(run_dir), *TINY, "--n-envs", "1", *extra,
    )  # fmt: skip
    assert json.loads((run_dir / "final_policy" / "config.json").read_text())["algo"] == algo
    sb3_actions, loaded_actions = sb3_and_loaded_actions(run_dir)
    np.testing.assert_allclose(loaded_actions, sb3_actions, rtol=1e-6, atol=1e-6)


def test_a_checkpoint_resumes_without_unpickling_and_a_planted_payload_does_not_run(tmp_path, decoder_dir):
    """The checkpoint holds tensors and plain values only: pickled code in it is refused, never run."""
    import pickle

    run_dir = tmp_path / "planted"
    train(run_dir, "go_to_target", decoder_dir, "--n-envs", "1")
    checkpoint = load_checkpoint(run_dir)
    assert "sb3_model_zip" not in checkpoint and {"sb3_state_dicts", "sb3_counters"} <= set(checkpoint)
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # A payload in the checkpoint itself, and the earlier format's SB3 zip with a cloudpickled payload in it.
    planted_zip = tmp_path / "planted.zip"
    import zipfile

    with zipfile.ZipFile(planted_zip, "w") as archive:
        archive.writestr(
            "data", json.dumps({"policy_class": {":type:": "<class>", ":serialized:": pickle.dumps(Payload()).hex()}})
        )
    for name, state in (
        ("pickled object", {**checkpoint, "payload": Payload()}),
        (
            "SB3 zip",
            {key: value for key, value in checkpoint.items() if not key.startswith("sb3_")}
            | {"sb3_model_zip": torch.frombuffer(bytearray(planted_zip.read_bytes()), dtype=torch.uint8)},
        ),
    ):
        with open(run_dir / "checkpoint" / "state.pt", "wb") as file:
            pickle.dump(state, file) if name == "pickled object" else torch.save(state, file)
        result = subprocess.run(
            [sys.executable, str(TRAIN), "--task", "go_to_target", "--run-dir", str(run_dir), "--low-level-policy",
             str(decoder_dir), *TINY, "--n-envs", "1", "--total-timesteps", "100000"],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        )  # fmt: skip
        assert result.returncode != 0, name
        assert not marker.exists(), f"the {name} payload ran"
        expected = "embeds an SB3 zip" if name == "SB3 zip" else "not a readable checkpoint"
        assert expected in result.stderr, (name, result.stderr[-2000:])


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"transfer_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_bad_input_names_the_value_and_the_choices(tmp_path, capsys):
    # In this process: the scripts' own argument handling, without paying their start-up three times.
    train_script, evaluate_script = load_script(TRAIN), load_script(EVALUATE)
    args = tyro.cli(train_script.Args, args=["--task", "go_to_nowhere", "--run-dir", str(tmp_path / "bad")])
    assert train_script.main(args) == 2
    error = capsys.readouterr().err
    assert "'go_to_nowhere'" in error and "go_to_target" in error and "velocity_control" in error
    with pytest.raises(SystemExit):
        tyro.cli(train_script.Args, args=["--algo", "sac"])
    error = capsys.readouterr().err
    assert "sac" in error and "recurrent_ppo" in error and "tqc" in error
    args = tyro.cli(train_script.Args, args=["--n-envs", "3", "--steps-per-update", "4096"])
    assert train_script.main(args) == 2
    assert "--steps-per-update 4096 is not a multiple of --n-envs 3" in capsys.readouterr().err
    assert evaluate_script.main(evaluate_script.Args(policy=str(tmp_path))) == 2
    assert "config.json" in capsys.readouterr().err
