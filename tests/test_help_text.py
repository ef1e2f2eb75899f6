"""``--help`` as a user reads it: each default said once (mocapact-collect, mocapact-minari), every default said
(mocapact-demo), and the sweep listing no trainer flag it sets itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from tiny_runs import REPO_ROOT  # noqa: E402  (tests/ is on sys.path under pytest)

SWEEP = REPO_ROOT / "baselines" / "ppo_expert" / "sweep.py"


def help_text(*command: str) -> str:
    environment = {**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, env=environment, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def option_helps(text: str) -> dict[str, str]:
    """Each option's help (its lines joined), by its first flag, from argparse's help."""
    blocks: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            flag = line.split()[0].rstrip(",")
            blocks[flag] = line.strip()
        elif flag and line.startswith("   "):
            blocks[flag] += " " + line.strip()
        else:
            flag = None
    return blocks


@pytest.mark.parametrize("module", ["mocapact_envs.tools.collect", "mocapact_envs.tools.minari_export"])
def test_each_default_is_said_once_and_only_where_there_is_one(module):
    helps = option_helps(help_text("-m", module))
    assert len(helps) > 10
    for text in helps.values():
        assert len(re.findall(r"\(default", text)) <= 1, text
        assert "(default: None)" not in text and "(default: False)" not in text, text
    if module.endswith("collect"):
        assert helps["--act-noise"].endswith("std of the Gaussian action noise (default: 0.1)")
        assert helps["--ref-steps"].endswith("reference steps (default: 1 2 3 4 5)")
        assert helps["--mocap-path"].endswith("reference clips (default: $MOCAPACT_MOCAP_PATH)")
        assert "(default: the preset's, 100; 10 with --small)" in helps["--n-start-rollouts"]
        assert helps["--termination-error-threshold"].endswith("tracking error that ends an episode (default: 0.3)")
        assert helps["--small"].endswith("MoCapAct's small dataset: 10 + 10 rollouts a snippet")


def test_the_demo_says_its_defaults():
    helps = option_helps(help_text("-m", "mocapact_envs.tools.demo"))
    assert help_text("-m", "mocapact_envs.tools.demo").startswith("usage: mocapact-demo ")
    expected = {
        "--clip": "(default: CMU_016_22-0-82)",
        "--out-dir": "(default: demo_output)",
        "--mocap-path": "(default: $MOCAPACT_MOCAP_PATH)",
        "--episodes": "(default: 3)",
        "--policy": "(default: expert)",
        "--seed": "episode i is seeded seed + i (default: 0)",
    }
    for flag, ending in expected.items():
        assert helps[flag].endswith(ending), helps[flag]


def test_the_sweep_lists_and_takes_no_trainer_flag_it_sets():
    text = help_text(str(SWEEP))
    for flag in ("--trainer.clips", "--clip ", "--clip,", "--trainer.seed", "--trainer.log-root"):
        assert flag not in text, flag
    assert "--trainer.preset" in text and "--trainer.total-timesteps" in text and "--snippets" in text
    environment = {**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1"}
    for flags in (["--clip", "CMU_009_01"], ["--trainer.clips", "CMU_009_01"], ["--trainer.seed", "3"]):
        result = subprocess.run(
            [sys.executable, SWEEP, "--snippets", "CMU_016_22-0-82", *flags],
            capture_output=True,
            text=True,
            env=environment,
            cwd=REPO_ROOT,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "Traceback" not in output, output
        assert f"Unrecognized options: {flags[0]}" in output, output
