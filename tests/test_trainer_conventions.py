"""What the four trainers of baselines/ share: one run folder (resume checkpoint, TensorBoard) and --help with presets."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mocapact_envs.training.run_folder import (
    CHECKPOINT_FILE,
    checkpoint_path,
    load_checkpoint,
    resume_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mocapact_envs.training.scripts import flag_value

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINERS = {name: REPO_ROOT / "baselines" / name / "train.py" for name in ("ppo_expert", "distill", "gpt", "transfer")}


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def option_help(help_text: str, flag: str) -> str:
    """One option's lines of tyro's --help: its flag line and the help lines below it."""
    lines = [line.strip("│ ") for line in help_text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"--{flag} "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("-")), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


@pytest.mark.parametrize("name", TRAINERS)
def test_help_shows_each_presets_values(name):
    trainer = load_script(TRAINERS[name])
    env = {**os.environ, "COLUMNS": "1000"}  # no wrapped lines
    result = subprocess.run(
        [sys.executable, TRAINERS[name], "--help"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    fields = {field for preset in trainer.PRESETS.values() for field in preset}
    assert len(fields) >= 6
    for field in fields:
        shown = option_help(result.stdout, field.replace("_", "-"))
        assert "(default: None)" not in shown, shown
        for preset, values in trainer.PRESETS.items():
            if field in values:
                assert f"{preset}: {flag_value(values[field])}" in shown, (field, preset, shown)


def test_checkpoint_is_one_file_that_round_trips(tmp_path):
    state = {"step": 7, "best": -np.inf, "weights": torch.arange(4.0), "args": '{"seed": 1}', "rng": rng_state()}
    save_checkpoint(tmp_path, state)
    assert [p.name for p in (tmp_path / CHECKPOINT_FILE.parent).iterdir()] == [CHECKPOINT_FILE.name]
    loaded = load_checkpoint(tmp_path)
    assert loaded["step"] == 7 and loaded["best"] == -np.inf and torch.equal(loaded["weights"], state["weights"])
    assert resume_state(tmp_path, resume=True)["step"] == 7
    assert resume_state(tmp_path, resume=False) is None
    assert resume_state(tmp_path / "new_run", resume=True) is None


def test_rng_state_restores_every_generator():
    generator = np.random.default_rng(5)
    state = rng_state(generator)
    first = (np.random.rand(), torch.rand(1).item(), generator.integers(1 << 30), __import__("random").random())
    set_rng_state(state, generator)
    again = (np.random.rand(), torch.rand(1).item(), generator.integers(1 << 30), __import__("random").random())
    assert first == again


def test_unreadable_or_old_checkpoints_are_named(tmp_path):
    path = checkpoint_path(tmp_path / "corrupt")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{path} is not a readable checkpoint"):
        resume_state(tmp_path / "corrupt", resume=True)
    # An earlier trainer version's resume files are not silently started over: --no-resume says so.
    for i, old in enumerate(("checkpoint/state.json", "checkpoints/latest.json")):
        run = tmp_path / f"old_run{i}"
        (run / old).parent.mkdir(parents=True)
        (run / old).write_text("{}")
        with pytest.raises(ValueError, match=f"{run / old} is the checkpoint of an earlier version.*--no-resume"):
            resume_state(run, resume=True)
        assert resume_state(run, resume=False) is None
