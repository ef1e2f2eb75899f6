"""`benchmarks/long_snippet_experts.py` as a user runs it, with a tiny budget: it trains, evaluates with MoCapAct's
protocol, prints its table, and leaves a run the zoo's export and table take like a sweep's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = REPO_ROOT / "benchmarks" / "long_snippet_experts.py"
SNIPPET = "CMU_016_22-0-60"
TINY_TRAINER = [
    "--num-envs", "2", "--num-steps", "128", "--minibatch-size", "128", "--update-epochs", "1",
    "--policy-hidden-sizes", "32", "32", "--value-hidden-sizes", "32", "32", "--eval-every-steps", "256",
    "--eval-rsi-episodes", "2", "--eval-start-episodes", "1", "--eval-num-envs", "1",
]  # fmt: skip


def run(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


pytestmark = pytest.mark.xdist_group("ppo_expert")


def test_the_benchmark_trains_evaluates_and_its_runs_go_into_a_zoo(tmp_path):
    rows_path = tmp_path / "rows.json"
    benchmark = [
        BENCHMARK, "--method", "single", "--snippets", SNIPPET, "--seeds", "0", "--budget-steps", "512",
        "--rsi-episodes", "3", "--start-episodes", "2", "--log-root", tmp_path / "runs",
    ]  # fmt: skip
    result = run(*benchmark, "--output-json", rows_path, "--", *TINY_TRAINER)
    assert SNIPPET in result.stdout  # the table
    (row,) = json.loads(rows_path.read_text())
    assert row["snippet_id"] == SNIPPET and row["env_steps"] >= 512 and row["cpu_minutes"] > 0
    assert row["episodes"] == {"eval_rsi": 3, "eval_start": 2} and 0 < row["rsi_norm_length"] <= 1
    run_dir = tmp_path / "runs" / SNIPPET / "0"
    final = json.loads((run_dir / "final_evaluation.json").read_text())
    last = json.loads((run_dir / "evaluations.json").read_text())[-1]
    # The sweep's record: the zoo's table reads the training's steps and minutes from it.
    assert (final["env_steps"], final["training_minutes"]) == (last["global_step"], last["training_minutes"])
    assert final["eval_rsi"]["mean_norm_episode_length"] == row["rsi_norm_length"]

    # A second invocation trains nothing and reports the same figures from the cached evaluation.
    again = run(*benchmark, "--report-only", "--output-json", rows_path)
    assert json.loads(rows_path.read_text())[0]["rsi_norm_length"] == row["rsi_norm_length"]
    assert "not finished" not in again.stderr

    zoo = tmp_path / "zoo"
    run("-m", "mocapact_envs.tools.zoo", "export", "--runs", tmp_path / "runs", "--zoo", zoo, "--only-better")
    run("-m", "mocapact_envs.tools.zoo", "table", "--zoo", zoo)
    (table_row,) = [r for r in json.loads((zoo / "table.json").read_text()) if r.get("trained", True)]
    # Listed under the zoo's snippet that holds it (the shared clip list's CMU_016_22-0-82).
    assert table_row["trained_on"] == SNIPPET and table_row["env_steps"] == final["env_steps"]
    assert table_row["rsi_norm_length"] == round(final["eval_rsi"]["mean_norm_episode_length"], 3)
