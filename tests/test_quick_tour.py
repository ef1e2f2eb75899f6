"""The README's quick tour, run as it is written: every stage's command in order, then every stage's output.

The commands come from the one ``bash`` block of the README section "Quick tour"; each runs from the checkout
root as a newcomer pastes it, in its own ``bash``, after the block's settings above it (``source``, ``export``,
``NAME=...`` lines). ``TOUR`` points the outputs at a temporary folder instead of ``tour/``.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import time

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file
from tiny_runs import REPO_ROOT, environment

import mocapact_envs
from mocapact_envs.datasets import ExpertDataset
from mocapact_envs.policies.gpt import GPTPolicy
from mocapact_envs.policies.low_level import LowLevelPolicy
from mocapact_envs.policies.multiclip import MultiClipPolicy
from mocapact_envs.training.run_folder import load_checkpoint
from mocapact_envs.training.task_policies import load_task_policy

pytestmark = pytest.mark.xdist_group("quick_tour")
SECTION = "## Quick tour"
SNIPPET = "CMU_016_22-0-82"
#: A line that sets something for the commands after it rather than making anything.
SETTING = re.compile(r"(source|export)\s|[A-Za-z_][A-Za-z0-9_]*=\S*$")


def tour_block() -> str:
    """The one bash block of the README's quick tour section."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme.count(SECTION) == 1, f"README.md needs one section starting {SECTION!r}"
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert [language for language, _ in blocks] == ["bash"], "the quick tour is one bash block"
    return blocks[0][1]


def tour_steps(block: str) -> list[tuple[str, str, list[str]]]:
    """(comment, command, settings before it) for each command of the block, in order.

    Lines continued with a backslash are one command; each command has a comment line above it.
    """
    lines = block.replace("\\\n", " ").splitlines()
    steps, settings, comment = [], [], None
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if line.startswith("#"):
            comment = line.lstrip("# ")
            continue
        if SETTING.match(line):
            settings.append(line)
        else:
            assert comment, f"the quick tour has no comment above {line!r}"
            steps.append((comment, re.sub(r"\s+", " ", line), list(settings)))
        comment = None
    return steps


def test_readme_quick_tour_runs_and_makes_every_stage(tmp_path, monkeypatch):
    steps = tour_steps(tour_block())
    assert len(steps) >= 7, steps
    tour = tmp_path / "tour"
    env = environment(TOUR=str(tour), COLUMNS="200")
    env.pop("MINARI_DATASETS_PATH", None)  # the block sets it
    outputs, seconds = {}, []
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for comment, command, settings in steps:
        script = "\n".join(["set -eo pipefail", *settings, command])
        start = time.monotonic()
        result = subprocess.run(
            ["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        seconds.append(f"{time.monotonic() - start:5.1f} s  {comment}")
        assert result.returncode == 0, (
            f"quick tour step {comment!r} failed ({result.returncode}):\n{command}\n{result.stdout}\n{result.stderr}"
        )
        outputs[command.split()[1] if command.startswith("python") else command.split()[0]] = result.stdout
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    print("\n".join([*seconds, f"subprocess CPU {cpu:.1f} s"]))

    # The expert: both saved models, loaded as a user loads them.
    run = tour / "experts" / SNIPPET / "0"
    for kind in ("eval_rsi", "eval_start"):
        assert {p.name for p in (run / kind / "model").iterdir()} >= {"config.json", "model.safetensors"}
    expert = mocapact_envs.load_expert(run)
    assert expert.snippet_id == SNIPPET
    assert load_checkpoint(run)["global_step"] >= 256

    # Its evaluation.
    metrics = json.loads((tour / "evaluation" / "metrics.json").read_text())
    assert metrics["clip"] == SNIPPET
    assert metrics["summary"]["eval_rsi"]["episodes"] == 2 and metrics["summary"]["eval_start"]["episodes"] == 1
    assert (tour / "evaluation" / "video.mp4").stat().st_size > 0

    # The rollouts, in MoCapAct's layout.
    rollouts = tour / "rollouts"
    assert sorted(p.name for p in rollouts.iterdir()) == ["CMU_016_22.hdf5", "dataset_metrics.npz"]
    with h5py.File(rollouts / "CMU_016_22.hdf5", "r") as h5:
        assert int(h5["n_start_rollouts"][...]) == 2 and int(h5["n_rsi_rollouts"][...]) == 2
        assert sorted(k for k in h5 if k.startswith("CMU_")) == [SNIPPET]
        steps_logged = sum(h5[f"{SNIPPET}/{episode}/actions"].shape[0] for episode in range(4))
    assert len(ExpertDataset([rollouts], "multi_clip_sans_id", seq_steps=1)) > 0

    # The Minari dataset, where the block said, loaded by Minari; the block's own read-back printed it too.
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tour / "minari"))
    dataset = minari.load_dataset("mocapact/CMU_016_22/expert-v0")
    assert dataset.total_episodes == 4 and dataset.total_steps == steps_logged
    assert outputs["-c"].split() == ["4"]

    # The distilled NPMP and its decoder.
    policy = MultiClipPolicy.load(tour / "distill" / "best")
    assert policy.config.kind == "npmp" and list(policy.config.trained_snippets) == [SNIPPET]
    decoder_dir = tour / "distill" / "best" / "low_level_policy"
    decoder = LowLevelPolicy.load(decoder_dir)
    base = np.random.default_rng(0).normal(size=(2, 205)).astype(np.float32)
    latent = np.random.default_rng(1).normal(size=(2, decoder.config.latent_size)).astype(np.float32)
    np.testing.assert_allclose(decoder.act(base, latent), policy.decoder.act(base, latent), rtol=1e-6)

    # The transfer policy acts through that decoder, a copy of it saved beside the policy.
    transfer = load_task_policy(tour / "transfer" / "best_policy")
    assert transfer.config["env"]["env_id"] == "mocapact/GoToTarget-v0"
    assert transfer.config["action_space"]["shape"] == [decoder.config.latent_size]
    copied = load_file(tour / "transfer" / "best_policy" / "low_level_policy" / "model.safetensors")
    original = load_file(decoder_dir / "model.safetensors")
    assert copied.keys() == original.keys() and all(np.array_equal(copied[k], original[k]) for k in original)
    env = transfer.make_env(episode_steps=5)
    observation, _ = env.reset(seed=0)
    action, _ = transfer.predict(observation, deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype))
    env.close()

    # The GPT: its policy and resume checkpoint, then its motion completion.
    gpt = GPTPolicy.load(tour / "gpt" / "best")
    assert gpt.config.extra["trained_clips"] == ["CMU_016_22"]
    assert load_checkpoint(tour / "gpt")["step"] == 20
    lengths = json.loads((tour / "completion.json").read_text())["lengths"]
    assert list(lengths) == ["CMU_016_22"] and len(lengths["CMU_016_22"]) == 1
    assert 33 <= lengths["CMU_016_22"][0] <= 60
