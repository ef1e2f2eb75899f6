"""Env steps per second per core of the expert trainer: K experts in one process against one.

Runs ``baselines/ppo_expert/train.py`` as a user runs it, one configuration after the other in
one process each (``--torch-threads 1``: one core), with the same PPO settings, on real clips:

* ``K = 1`` (one expert, as the single-expert trainer trained them);
* ``K = --experts`` (that many clips in one invocation);
* optionally the single-expert trainer of an earlier commit (``--baseline-commit``, read from
  git history), the trainer before it could train several experts.

Evaluations are pushed past the budget, so the figure is training throughput: each expert's
TensorBoard ``charts/SPS`` (its env steps over the run's wall-clock) summed over the experts
of a run. Machines here are noisy: compare ratios from one run, and use ``--rounds`` to alternate
the configurations so load changes hit all of them.

    python benchmarks/expert_trainer_throughput.py
    python benchmarks/expert_trainer_throughput.py --experts 8 --steps 60000 --baseline-commit e2dc59a
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "baselines" / "ppo_expert" / "train.py"
#: Whole shared clips of several kinds (walks, runs, jumps, a turn): one per expert.
CLIPS = (
    "CMU_016_22",
    "CMU_008_01",
    "CMU_016_31",
    "CMU_049_01",
    "CMU_016_58",
    "CMU_009_01",
    "CMU_016_32",
    "CMU_002_01",
)
TARGET_RATIO = 1.5


def sps_of(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mocapact_envs.training.run_folder import TENSORBOARD_DIR

    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    return float(events.Scalars("charts/SPS")[-1].value)


def run_trainer(trainer: Path, clips: tuple[str, ...], steps: int, preset: str, log_root: Path) -> float:
    """Summed env steps per second of one invocation training ``clips`` for ``steps`` each (``--clip``: the
    single-expert trainer's flag, an alias of ``--clips`` now)."""
    command = [
        sys.executable, str(trainer), "--clip", *clips, "--preset", preset, "--log-root", str(log_root),
        "--total-timesteps", str(steps), "--eval-every-steps", str(10 * steps), "--eval-rsi-episodes", "1",
        "--eval-start-episodes", "1", "--eval-num-envs", "1", "--torch-threads", "1", "--no-progress-bar",
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return sum(sps_of(run_dir) for run_dir in log_root.glob("*/0"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=8, help="K, clips trained together (at most 8)")
    parser.add_argument("--steps", type=int, default=40_000, help="env steps per expert in each run")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the configurations this many times")
    parser.add_argument(
        "--preset", default="cpu-absolute", help="train.py preset (cpu-absolute also runs on older trainers)"
    )
    parser.add_argument("--baseline-commit", help="also run this commit's single-expert train.py (git history)")
    args = parser.parse_args()
    if not 1 <= args.experts <= len(CLIPS):
        parser.error(f"--experts must be between 1 and {len(CLIPS)}, got {args.experts}.")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trainers = {"K = 1": (TRAIN, CLIPS[:1]), f"K = {args.experts}": (TRAIN, CLIPS[: args.experts])}
        if args.baseline_commit:
            source = subprocess.run(
                ["git", "show", f"{args.baseline_commit}:baselines/ppo_expert/train.py"],
                cwd=REPO_ROOT, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            old = REPO_ROOT / "baselines" / "ppo_expert" / f".train_{args.baseline_commit}.py"
            old.write_text(source)
            # The old preset's name for the same settings.
            trainers[f"{args.baseline_commit} (single expert)"] = (old, CLIPS[:1])
        rates: dict[str, list[float]] = {name: [] for name in trainers}
        try:
            for round_index in range(args.rounds):
                for name, (trainer, clips) in trainers.items():
                    preset = "cpu" if trainer.name.startswith(".train_") else args.preset
                    log_root = tmp / f"{round_index}-{len(rates[name])}-{abs(hash(name))}"
                    rates[name].append(run_trainer(trainer, clips, args.steps, preset, log_root))
                    print(f"round {round_index + 1}: {name}: {rates[name][-1]:.0f} env steps/s", flush=True)
        finally:
            if args.baseline_commit:
                old.unlink(missing_ok=True)

    reference = np.mean(rates["K = 1"])
    table = Table(title=f"expert trainer throughput, one core, {args.steps:,} steps per expert, preset {args.preset}")
    for column in ("configuration", "env steps/s (per core)", "x K = 1"):
        table.add_column(column, justify="right")
    for name, values in rates.items():
        table.add_row(name, f"{np.mean(values):.0f}", f"{np.mean(values) / reference:.2f}")
    Console().print(table)
    ratio = np.mean(rates[f"K = {args.experts}"]) / reference
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"K = {args.experts} against K = 1: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
