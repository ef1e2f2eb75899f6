"""Tiny real runs shared by the tests: experts trained and rollouts collected as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "baselines" / "ppo_expert" / "train.py"
#: Three real clips, one of them split in two snippets (a clip file with two snippet groups).
SNIPPETS = ("CMU_009_01-0-40", "CMU_016_22-0-82", "CMU_009_12-0-210", "CMU_009_12-177-387")
CLIPS = ("CMU_009_01", "CMU_009_12", "CMU_016_22")
# Quality does not matter: one update of 64 steps, 32-unit networks, one evaluation episode each.
TINY_TRAINING = [
    "--seed", "0", "--backend", "dm_control", "--num-envs", "1", "--num-steps", "64", "--minibatch-size", "64",
    "--update-epochs", "1", "--policy-hidden-sizes", "32", "32", "--value-hidden-sizes", "32", "32",
    "--total-timesteps", "64", "--eval-every-steps", "100000", "--eval-rsi-episodes", "1", "--eval-start-episodes", "1",
    "--eval-num-envs", "1", "--no-progress-bar",
]  # fmt: skip
N_START, N_RSI, SEED = 2, 2, 7
COLLECT = ["-m", "mocapact_envs.tools.collect", "--n-start-rollouts", str(N_START), "--n-rsi-rollouts", str(N_RSI)]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl", **extra}


def refused(result: subprocess.CompletedProcess) -> str:
    """The one error line of a command that refused its input (exit status 2, no traceback)."""
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    return error


def refused_by_baseline(script: str, *arguments) -> str:
    """Runs a script of baselines/ as a user does; it must refuse its input: its one error line."""
    command = [sys.executable, REPO_ROOT / "baselines" / script, *map(str, arguments)]
    env = {**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1"}
    return refused(subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600))


def run(*args, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO_ROOT,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def datasets_of(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file, by its path."""
    values: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, obj: values.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
    return values


def train_tiny_experts(snippets, log_root: Path) -> None:
    """Tiny experts for ``snippets``, trained together in one invocation of the real trainer (``--clips``)."""
    run(TRAIN, "--clips", *snippets, *TINY_TRAINING, "--log-root", log_root)


@pytest.fixture(scope="session")
def experts_root(tmp_path_factory) -> Path:
    """Tiny experts trained with the real trainer, all in one invocation."""
    root = tmp_path_factory.mktemp("experts")
    train_tiny_experts(SNIPPETS, root)
    for snippet in SNIPPETS:
        assert (root / snippet / "0" / "eval_rsi" / "model").is_dir()
    return root


@pytest.fixture(scope="session")
def rollouts(experts_root, tmp_path_factory) -> Path:
    """The collection a user runs: two worker processes."""
    output = tmp_path_factory.mktemp("rollouts")
    result = run(*COLLECT, experts_root, "--output-dir", output, "--seed", SEED, "--workers", 2)
    assert "3 clip files" in result.stderr
    return output


@pytest.fixture(scope="session")
def shipped_expert_rollouts(tmp_path_factory) -> Path:
    """A real rollout file: one start and one random-start episode of the shipped CMU_016_22 expert."""
    from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS

    output = tmp_path_factory.mktemp("shipped_rollouts")
    run("-m", "mocapact_envs.tools.collect", SHIPPED_EXPERTS, "--output-dir", output,
        "--n-start-rollouts", 1, "--n-rsi-rollouts", 1)  # fmt: skip
    return output / "CMU_016_22.hdf5"
