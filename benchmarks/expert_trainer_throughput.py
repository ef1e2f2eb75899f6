"""Env steps per second per core of the expert trainer: K experts in one process against one.

Runs ``baselines/ppo_expert/train.py`` as a user runs it, one configuration after the other in
one process each (``--torch-threads 1``: one core), with the same PPO settings, on real clips:

* ``K = 1`` (one expert, as the single-expert trainer trained them);
* ``K = --experts`` (that many clips in one invocation);
* optionally the single-expert trainer of an earlier commit (``--baseline-commit``, read from
  git history), the trainer before it could train several experts.

Evaluations are pushed past the budget, so the figures are training throughput, two ways:

* **per CPU second** (the headline): env steps over the CPU time (user + system) of the training
  loop. Each configuration also runs for one update, and its CPU time (imports, building the
  worlds, the final evaluations) and steps are subtracted, so set-up does not count. CPU time moves
  less with the machine's load than wall-clock does, but it still moves (shared caches): K = 1 ran
  at 690 to 904 steps per CPU second over one day here;
* **per wall-clock second**: each expert's TensorBoard ``charts/SPS`` summed over the experts of a
  run, which a busy machine lowers.

Machines here are noisy: compare ratios from one run, and use ``--rounds`` to alternate the
configurations so load changes hit all of them.

    python benchmarks/expert_trainer_throughput.py
    python benchmarks/expert_trainer_throughput.py --experts 8 --steps 60000 --baseline-commit e2dc59a
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
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
#: Env steps per expert of the set-up run: one update of the presets' 4 x 256 steps.
SETUP_STEPS = 1024


@dataclass
class Run:
    """One invocation: its experts' env steps, summed wall-clock rate and CPU seconds of the whole process."""

    steps: int
    wall_clock_rate: float
    cpu_seconds: float


def last_sps_event(run_dir: Path) -> tuple[int, float]:
    """The env step and ``charts/SPS`` value of a run's last update."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mocapact_envs.training.run_folder import TENSORBOARD_DIR

    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    last = events.Scalars("charts/SPS")[-1]
    return int(last.step), float(last.value)


def run_trainer(trainer: Path, clips: tuple[str, ...], steps: int, preset: str, log_root: Path) -> Run:
    """One invocation training ``clips`` for ``steps`` each (``--clip``: the single-expert trainer's flag, an
    alias of ``--clips`` now)."""
    command = [
        sys.executable, str(trainer), "--clip", *clips, "--preset", preset, "--log-root", str(log_root),
        "--total-timesteps", str(steps), "--eval-every-steps", str(10 * steps), "--eval-rsi-episodes", "1",
        "--eval-start-episodes", "1", "--eval-num-envs", "1", "--torch-threads", "1", "--no-progress-bar",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    events = [last_sps_event(run_dir) for run_dir in log_root.glob("*/0")]
    return Run(sum(step for step, _ in events), sum(rate for _, rate in events), cpu_seconds)


def measure(trainer: Path, clips: tuple[str, ...], steps: int, preset: str, log_root: Path) -> tuple[float, float]:
    """Env steps per CPU second of the training loop (a one-update run's set-up subtracted) and per wall-clock
    second (TensorBoard's), for ``clips`` trained together for ``steps`` each."""
    setup = run_trainer(trainer, clips, SETUP_STEPS, preset, log_root / "setup")
    full = run_trainer(trainer, clips, steps, preset, log_root / "full")
    return (full.steps - setup.steps) / (full.cpu_seconds - setup.cpu_seconds), full.wall_clock_rate


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
        # Per configuration: (env steps per CPU second, per wall-clock second) of each round.
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in trainers}
        try:
            for round_index in range(args.rounds):
                for name, (trainer, clips) in trainers.items():
                    preset = "cpu" if trainer.name.startswith(".train_") else args.preset
                    log_root = tmp / f"{round_index}-{len(rates[name])}-{abs(hash(name))}"
                    rates[name].append(measure(trainer, clips, args.steps, preset, log_root))
                    per_cpu, per_wall = rates[name][-1]
                    print(
                        f"round {round_index + 1}: {name}: {per_cpu:.0f} env steps per CPU second, "
                        f"{per_wall:.0f} per wall-clock second",
                        flush=True,
                    )
        finally:
            if args.baseline_commit:
                old.unlink(missing_ok=True)

    means = {name: np.mean(values, axis=0) for name, values in rates.items()}
    reference = means["K = 1"]
    table = Table(title=f"expert trainer throughput, one core, {args.steps:,} steps per expert, preset {args.preset}")
    columns = ("configuration", "env steps per CPU s", "x K = 1", "env steps per wall-clock s", "x K = 1")
    for column in columns:
        table.add_column(column, justify="right")
    for name, (per_cpu, per_wall) in means.items():
        table.add_row(
            name, f"{per_cpu:.0f}", f"{per_cpu / reference[0]:.2f}", f"{per_wall:.0f}", f"{per_wall / reference[1]:.2f}"
        )
    Console().print(table)
    ratio = means[f"K = {args.experts}"][0] / reference[0]
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"K = {args.experts} against K = 1, per CPU second: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
