"""The Ray Tune sweep end to end, as a user runs it: embedded Ray, retries from checkpoints, resuming a stopped sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mocapact_envs

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP = REPO_ROOT / "baselines" / "ppo_expert" / "sweep.py"
SNIPPETS = ("CMU_016_22-0-60", "CMU_009_12-0-80")
# Tiny trials: 32-unit networks, about three updates of 256 steps, a handful of evaluation episodes.
TINY = [
    "--max-concurrent", "1", "--final-rsi-episodes", "4", "--final-start-episodes", "2", "--final-num-envs", "2",
    "--trainer.num-envs", "2", "--trainer.num-steps", "128", "--trainer.minibatch-size", "128",
    "--trainer.update-epochs", "1", "--trainer.policy-hidden-sizes", "32", "32",
    "--trainer.value-hidden-sizes", "32", "32", "--trainer.total-timesteps", "600",
    "--trainer.eval-every-steps", "256", "--trainer.eval-rsi-episodes", "2", "--trainer.eval-start-episodes", "1",
    "--trainer.eval-num-envs", "1",
]  # fmt: skip

pytestmark = pytest.mark.xdist_group("sweep")


def sweep_command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(SWEEP), "--snippets", *SNIPPETS, "--log-root", str(root / "experts"),
        "--storage-path", str(root / "sweeps"), *TINY, *extra,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"}


def run_sweep(root: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        sweep_command(root, *extra), cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sweep exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def final_evaluation(root: Path, snippet: str) -> Path:
    return root / "experts" / snippet / "0" / "final_evaluation.json"


def test_sweep_trains_retries_from_checkpoints_and_tabulates(tmp_path):
    result = run_sweep(tmp_path, "--inject-failure-after", "1")
    rows = json.loads((tmp_path / "sweeps" / "experts" / "results.json").read_text())
    assert [r["snippet"] for r in rows] == list(SNIPPETS)
    for row in rows:
        assert 0.0 < row["rsi_norm_length"] <= 1.0 and 0.0 < row["start_norm_length"] <= 1.0
        assert row["rsi_episodes"] == 4 and row["start_episodes"] == 2 and row["env_steps"] >= 600
        expert = mocapact_envs.load_expert(final_evaluation(tmp_path, row["snippet"]).parent)
        assert expert.snippet_id == row["snippet"]
    assert "| CMU_016_22-0-60 |" in (tmp_path / "sweeps" / "experts" / "results.md").read_text()
    assert (tmp_path / "sweeps" / "experts" / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "2 snippets: 0 finished, 2 to train in 2 trials" in result.stdout
    # Each trial failed once (the drill) and its retry went on from the checkpoint it had reported: the
    # steps it reported never go back to an earlier one.
    trials = sorted((tmp_path / "sweeps" / "experts").glob("train_trial_*"))
    assert len(trials) == 2
    for trial in trials:
        assert "injected failure after 1 evaluation reports" in (trial / "error.txt").read_text()
        with open(trial / "progress.csv") as f:
            steps = [int(row["env_steps"]) for row in csv.DictReader(f)]
        assert len(steps) >= 2 and steps == sorted(set(steps)), steps


def test_stopped_sweep_resumes_without_retraining_finished_snippets(tmp_path):
    process = subprocess.Popen(
        sweep_command(tmp_path),
        cwd=REPO_ROOT,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first, second = (final_evaluation(tmp_path, s) for s in SNIPPETS)
    deadline = time.time() + 500
    while not first.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.is_file(), "the first snippet did not finish"
    process.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops the trials
    process.wait(timeout=120)
    finished_before = [s for s, path in zip(SNIPPETS, (first, second), strict=True) if path.is_file()]
    finished_at = first.stat().st_mtime_ns
    checkpoint = tmp_path / "experts" / SNIPPETS[0] / "0" / "checkpoint" / "state.pt"
    checkpoint_at = checkpoint.stat().st_mtime_ns

    result = run_sweep(tmp_path)
    left = len(SNIPPETS) - len(finished_before)
    assert f"2 snippets: {len(finished_before)} finished, {left} to train in {left} trials" in result.stdout
    assert second.is_file()
    assert first.stat().st_mtime_ns == finished_at and checkpoint.stat().st_mtime_ns == checkpoint_at
    rows = json.loads((tmp_path / "sweeps" / "experts" / "results.json").read_text())
    assert all("rsi_norm_length" in r for r in rows)


def test_bad_snippets_are_named_before_training(tmp_path):
    # CMU_009_10's converted first two steps are broken (a garbage first frame: the root 1 m underground).
    bad = ["CMU_016_99", "CMU_016_22-0-500", "CMU_016_22-0-60", "CMU_009_10-0-33"]
    result = subprocess.run(
        [sys.executable, str(SWEEP), "--snippets", *bad, "--log-root", str(tmp_path), "--storage-path", str(tmp_path)],
        cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "3 of 4 snippet(s) cannot be trained" in result.stderr
    assert "CMU_016_99" in result.stderr and "CMU_016_22-0-500: runs past the end of CMU_016_22" in result.stderr
    assert "CMU_009_10-0-33: broken steps 0-1" in result.stderr
    assert not (tmp_path / "CMU_016_22-0-60").exists()


def test_unreachable_address_is_refused_with_a_clear_message(tmp_path):
    # Nothing listens on port 9 here: the sweep says so instead of waiting on ray.init's retries (minutes). The
    # timeout leaves room for the imports on a loaded machine, where they alone can take a minute.
    result = subprocess.run(
        [sys.executable, str(SWEEP), "--snippets", SNIPPETS[0], "--address", "127.0.0.1:9", "--log-root", str(tmp_path)],
        cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 2 and "no Ray cluster answers at --address 127.0.0.1:9" in result.stderr
    assert "ray start --head" in result.stderr


def test_snippets_already_in_the_zoo_are_not_trained(tmp_path):
    zoo = REPO_ROOT / "zoo"
    command = [
        sys.executable, str(SWEEP), "--snippets", "CMU_009_01-0-37", "--skip-zoo", str(zoo),
        "--log-root", str(tmp_path / "experts"), "--storage-path", str(tmp_path / "sweeps"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 snippet(s) already have an expert in" in result.stdout and "0 to train" in result.stdout
    assert not (tmp_path / "experts").exists()
    command[command.index(str(zoo))] = str(tmp_path / "no_zoo")
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no expert zoo at" in result.stderr


def test_dry_run_plans_runs_tabulates_and_resumes_many_trials_without_training(tmp_path):
    # 6 distinct snippets of one clip, a trial each: Tune starts, reports and checkpoints every trial; nothing trains.
    snippets = [f"CMU_009_12-{start}-{start + 20}" for start in range(0, 60, 10)]
    (tmp_path / "snippets.txt").write_text("\n".join(snippets) + "\n")
    command = [
        sys.executable, str(SWEEP), "--snippet-list", str(tmp_path / "snippets.txt"), "--dry-run",
        "--cpus-per-trial", "0.5", "--log-root", str(tmp_path / "experts"), "--storage-path", str(tmp_path / "sweeps"),
    ]  # fmt: skip

    def sweep() -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    result = sweep()
    assert "6 snippets: 0 finished, 6 to train in 6 trials" in result.stdout
    assert "for 6 trials" in result.stdout and "(dry run: nothing was trained)" in result.stdout
    rows = json.loads((tmp_path / "sweeps" / "experts" / "results.json").read_text())
    assert [r["snippet"] for r in rows] == snippets and all(r["env_steps"] == 0 for r in rows)
    assert len(list((tmp_path / "sweeps" / "experts").glob("train_trial_*/checkpoint_*"))) == 6
    assert not list((tmp_path / "experts").rglob("final_evaluation.json"))  # no stand-in passes for an expert
    # Resumed: nothing left to run; then with two snippets' results gone, only those two run again.
    assert "6 snippets: 6 finished, 0 to train in 0 trials" in sweep().stdout
    for snippet in snippets[:2]:
        (tmp_path / "experts" / snippet / "0" / "dry_run.json").unlink()
    assert "6 snippets: 4 finished, 2 to train in 2 trials" in sweep().stdout
    assert all((tmp_path / "experts" / s / "0" / "dry_run.json").is_file() for s in snippets)
