"""Bad data inputs get a clear error naming the file and what is wrong, before any work: corrupt AMC
clips, damaged experts and rollout files, and the dataset tools' flags.

Corrupt inputs are copies of real files (a clip of ../shared/cmu-mocap, the shipped expert, a real
rollout file) damaged in tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny_runs import refused

from mocapact_envs.datasets import D4RLDataset, ExpertDataset
from mocapact_envs.datasets.rollouts import RolloutFileError
from mocapact_envs.files import read_tensors, write_tensors
from mocapact_envs.mocap.amc import AMCFileError
from mocapact_envs.mocap.source import AMCFolderSource
from mocapact_envs.policies.expert_files import load_expert
from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_module(module: str, *arguments, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, arguments)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1", **env},
        timeout=300,
    )


# -- corrupt AMC clips ---------------------------------------------------------------------


@pytest.fixture
def clip_lines(mocap_folder) -> list[str]:
    """The lines of the real clip 16_22.amc (frames numbered from 1, 29 bone lines each)."""
    return (mocap_folder / "subjects" / "16" / "16_22.amc").read_text().splitlines()


def frame_line(lines: list[str], frame: int) -> int:
    """Index of the line holding frame number ``frame``."""
    return lines.index(str(frame))


def converted(tmp_path: Path, lines: list[str], mocap_folder: Path, monkeypatch) -> Path:
    """Writes ``lines`` as subject 16's clip 16_22 in a folder of its own and converts it (a fresh cache)."""
    monkeypatch.setenv("MOCAPACT_CACHE_DIR", str(tmp_path / "cache"))
    subject = tmp_path / "clips" / "16"
    subject.mkdir(parents=True)
    shutil.copy(mocap_folder / "subjects" / "16" / "16.asf", subject)
    path = subject / "16_22.amc"
    path.write_text("\n".join(lines) + "\n")
    AMCFolderSource(tmp_path / "clips").convert("CMU_016_22")
    return path


def test_the_real_clips_pass_the_amc_checks(mocap_folder, clips_table):
    """Every real clip of the shared folder passes, with the frame count clips.tsv gives: the checks
    refuse only damage."""
    from mocapact_envs.mocap import amc

    for row in clips_table:
        text = amc._renumbered_amc_text(mocap_folder / row["file"])
        assert amc.held_frames(text)[0] == int(row["frames_120hz"]), row["file"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # A garbage line inside frame 5, in place of its lthumb line.
        (
            lambda lines: lines.__setitem__(frame_line(lines, 5) + 21, "%%%% garbage"),
            r"line 145 \(frame 5\): expected bone 'lthumb' with 2 value\(s\), found '%%%% garbage'",
        ),
        # A value that is not a number.
        (
            lambda lines: lines.__setitem__(frame_line(lines, 7) + 22, "rfemur -32.38 abc 13.98"),
            r"line 206 \(frame 7\): bone rfemur has 'abc', which is not a number",
        ),
        # nan and inf values.
        (
            lambda lines: lines.__setitem__(frame_line(lines, 9) + 1, "root nan inf -33.8 1.8 5.4 7.2"),
            r"line 245 \(frame 9\): bone root has the non-finite value 'nan'",
        ),
        # A bone line with a value missing.
        (
            lambda lines: lines.__setitem__(frame_line(lines, 3) + 9, "rhumerus -49.42 -22.36"),
            r"line 73 \(frame 3\): bone rhumerus needs 3 value\(s\), found 2",
        ),
        # 50 frames deleted from the middle (frames 20 to 69).
        (
            lambda lines: lines.__delitem__(slice(frame_line(lines, 20), frame_line(lines, 70))),
            r"line 574 \(frame 19\): frames 20 to 69 are missing: frame 19 is followed by 70",
        ),
        # Truncated in the middle of frame 100.
        (
            lambda lines: lines.__delitem__(slice(frame_line(lines, 100) + 12, None)),
            r"line 2985 \(frame 100\): frame 100 stops at the end of the file \(truncated\?\) after 11 of its 29 bones "
            r"\(next: rhand\)",
        ),
        # Garbage before the first frame.
        (lambda lines: lines.insert(1, "garbage header"), r"line 2: 'garbage header' before the first frame"),
    ],
    ids=["garbage line", "not a number", "nan inf", "value missing", "50 frames deleted", "truncated", "header"],
)
def test_corrupt_amc_names_the_file_and_line(damage, message, clip_lines, tmp_path, mocap_folder, monkeypatch):
    damage(clip_lines)
    path = tmp_path / "clips" / "16" / "16_22.amc"
    with pytest.raises(AMCFileError, match=f"{path}, {message}"):
        converted(tmp_path, clip_lines, mocap_folder, monkeypatch)
    assert not list((tmp_path / "cache").rglob("*.h5")), "nothing is cached for a corrupt clip"


def test_truncated_amc_file_through_the_converter_cli(clip_lines, tmp_path, mocap_folder):
    """mocapact-convert says which file and line, without a traceback (a file cut mid-line)."""
    subject = tmp_path / "clips" / "16"
    subject.mkdir(parents=True)
    text = "\n".join(clip_lines)
    (subject / "16_22.amc").write_text(text[: text.index("\n50\n") + 60])  # cut inside frame 50's third line
    error = refused(
        run_module("mocapact_envs.tools.convert_clips", tmp_path / "clips", MOCAPACT_CACHE_DIR=str(tmp_path / "c"))
    )
    assert f"{subject / '16_22.amc'}, line " in error and "(frame 50)" in error


def test_corrupt_amc_reaches_the_environment_named(clip_lines, tmp_path, mocap_folder, monkeypatch):
    import gymnasium as gym

    import mocapact_envs  # noqa: F401

    clip_lines[frame_line(clip_lines, 30) + 2] = "lowerback inf 0 0"
    path = tmp_path / "clips" / "16" / "16_22.amc"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(clip_lines) + "\n")
    monkeypatch.setenv("MOCAPACT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(AMCFileError, match=rf"{path}, line \d+ \(frame 30\): bone lowerback has the non-finite"):
        gym.make("mocapact/MocapTracking-CMU_016_22-v0", mocap_path=str(tmp_path / "clips"))


# -- damaged experts ---------------------------------------------------------------------------


@pytest.fixture
def expert_copy(tmp_path) -> Path:
    """A copy of the shipped expert's model folder."""
    model = tmp_path / "CMU_016_22-0-82" / "0" / "eval_rsi" / "model"
    shutil.copytree(SHIPPED_EXPERTS / "CMU_016_22-0-82" / "0" / "eval_rsi" / "model", model)
    return model


def test_nan_expert_weights_name_the_file(expert_copy):
    weights = expert_copy / "model.safetensors"
    tensors = read_tensors(weights)
    tensors["actor_mean.0.weight"][3, :5] = float("nan")
    write_tensors(weights, tensors)
    with pytest.raises(ValueError, match=rf"{weights}: 'actor_mean.0.weight' holds NaN or infinity at 5 of its"):
        load_expert(expert_copy)
    normalizer = expert_copy / "normalizer.safetensors"
    shutil.copy(SHIPPED_EXPERTS / "CMU_016_22-0-82/0/eval_rsi/model/model.safetensors", weights)
    stats = read_tensors(normalizer)
    stats["obs_var"][0] = float("inf")
    write_tensors(normalizer, stats)
    with pytest.raises(ValueError, match=rf"{normalizer}: 'obs_var' holds NaN or infinity at 1 of its"):
        load_expert(expert_copy)


@pytest.mark.parametrize("device", ["tpu", "cuda:7", "gpu0"])
def test_a_bad_device_is_named_not_a_corrupt_file(device, expert_copy):
    with pytest.raises(ValueError, match=rf"device '{device}'.*choose one of cpu") as raised:
        load_expert(expert_copy, device=device)
    assert "corrupt" not in str(raised.value)
    assert load_expert(expert_copy, device="cpu").predict  # the same expert loads on a real device


def test_expert_config_without_network_names_the_key(expert_copy):
    import json

    config_path = expert_copy / "config.json"
    config = json.loads(config_path.read_text())
    del config["network"], config["obs_normalization"]["clip"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{config_path} lacks 'network', 'obs_normalization.clip'"):
        load_expert(expert_copy)


# -- damaged rollout files, dataset options ---------------------------------------------------


@pytest.fixture
def damaged_rollouts(shipped_expert_rollouts, tmp_path) -> Path:
    """A copy of a real rollout file whose random-start episode lost its ``actions``."""
    path = tmp_path / shipped_expert_rollouts.name
    shutil.copy(shipped_expert_rollouts, path)
    with h5py.File(path, "a") as h5:
        del h5["CMU_016_22-0-82/1/actions"]
    return path


MISSING_ACTIONS = r"rollout file {}: episode CMU_016_22-0-82/1 has no 'actions' \(it has advantages, mean_actions"


def test_episode_without_actions_names_file_episode_and_key(damaged_rollouts):
    message = MISSING_ACTIONS.format(damaged_rollouts)
    with pytest.raises(RolloutFileError, match=message):
        ExpertDataset([damaged_rollouts], action_key="actions")
    with pytest.raises(RolloutFileError, match=message):
        D4RLDataset([damaged_rollouts]).get_in_memory_rollouts()
    # The other datasets of the same file still read.
    assert len(ExpertDataset([damaged_rollouts], action_key="mean_actions")) > 0


def test_misaligned_episode_rows_are_named(shipped_expert_rollouts, tmp_path):
    path = tmp_path / shipped_expert_rollouts.name
    shutil.copy(shipped_expert_rollouts, path)
    with h5py.File(path, "a") as h5:
        rewards = h5["CMU_016_22-0-82/0/rewards"][...]
        del h5["CMU_016_22-0-82/0/rewards"]
        h5["CMU_016_22-0-82/0/rewards"] = rewards[:-3]
    with pytest.raises(RolloutFileError, match=rf"{path}: the rows of episode CMU_016_22-0-82/0 do not line up"):
        D4RLDataset([path]).get_in_memory_rollouts()


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf")])
def test_weighting_temperature_must_be_positive(temperature, shipped_expert_rollouts):
    with pytest.raises(ValueError, match=rf"temperature must be a finite number > 0, got {temperature}"):
        ExpertDataset([shipped_expert_rollouts], weighting="awr", temperature=temperature)


def test_awr_weights_are_finite(shipped_expert_rollouts):
    dataset = ExpertDataset([shipped_expert_rollouts], weighting="awr", temperature=0.5)
    weights = dataset._weights  # one per step
    assert np.isfinite(weights).all() and (weights > 0).all() and abs(weights.mean() - 1) < 1e-4
    with pytest.raises(ValueError, match=r"max_weight must be > 0 \(float\('inf'\) clips nothing\), got nan"):
        ExpertDataset([shipped_expert_rollouts], weighting="awr", max_weight=float("nan"))


# -- the dataset tools' flags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--version", "-1"], "dataset version (--version) must be an integer >= 0 (ids end in -v<N>), got -1."),
        (["--ref-min-episodes", "0"], "ref_min_episodes (--ref-min-episodes) must be an integer >= 1, got 0."),
        (["--collection", "my-set"], "dataset name 'my-set' must be letters, digits and '_' only"),
    ],
)
def test_minari_export_refuses_bad_flags_before_writing(flags, message, shipped_expert_rollouts, tmp_path):
    root = tmp_path / "minari"
    error = refused(
        run_module("mocapact_envs.tools.minari_export", shipped_expert_rollouts, *flags, MINARI_DATASETS_PATH=str(root))
    )
    assert message in error
    assert not root.exists(), "nothing is written for refused flags"


def test_collect_refuses_nan_noise_and_a_file_as_output(tmp_path):
    error = refused(run_module("mocapact_envs.tools.collect", SHIPPED_EXPERTS, "--output-dir", tmp_path,
                               "--act-noise", "nan"))  # fmt: skip
    assert "act_noise (--act-noise) must be a finite number >= 0, got nan." in error
    a_file = tmp_path / "rollouts.hdf5"
    a_file.write_text("")
    for output in (a_file, a_file / "sub"):
        error = refused(run_module("mocapact_envs.tools.collect", SHIPPED_EXPERTS, "--output-dir", output))
        assert f"output folder (--output-dir) {output} cannot be a folder: {a_file} is a file" in error
