"""Expert methods on MoCapAct's long snippets, side by side under one budget and MoCapAct's protocol.

Trains each (snippet, seed) with ``baselines/ppo_expert/train.py`` as a user runs it, one process
(one core) at a time, resuming where a run stopped; measures its CPU time (user + system, which a
busy machine moves less than wall-clock); evaluates the finished expert with MoCapAct's protocol
(1,000 random starts, 100 snippet starts, a fresh seed); and prints the table beside the zoo's
expert of the snippet. Curves: the relay's evaluations at ``--curve-minutes`` (converted to env
steps at the run's own measured steps per CPU minute), or the single expert's training evaluations
nearest those steps (20 + 5 episodes each: a rough curve, not the protocol).

    python benchmarks/long_snippet_experts.py --method relay --seeds 0 1
    python benchmarks/long_snippet_experts.py --method single --snippets CMU_009_12-0-198 --seeds 0
    python benchmarks/long_snippet_experts.py --method relay --report-only   # the table of what finished
    python benchmarks/long_snippet_experts.py --method relay --window-steps 50 -- --num-envs 8

Methods: ``single`` (the trainer's default preset, ``cpu-wide``, one expert per snippet, the budget as its
``--total-timesteps``) and ``relay`` (``--relay-window-steps``/``--relay-overlap-steps``: short-window
experts composed in time, the budget split over the windows). Budget: ``--budget-steps`` env steps,
1.75M by default: about 35 minutes of one core of this machine at the ``cpu`` preset's measured
rate (1M steps in about 20 minutes); the table gives each run's own CPU minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
TRAIN = REPO_ROOT / "baselines" / "ppo_expert" / "train.py"
#: Issue 34's benchmark set: a run, a validation clip, two more long snippets, a non-locomotion one, a long walk.
BENCHMARK_SNIPPETS = (
    "CMU_009_12-0-198",
    "CMU_049_01-0-177",
    "CMU_049_18-0-167",
    "CMU_016_32-0-157",
    "CMU_006_01-0-133",
    "CMU_008_04-0-131",
)
METHODS = ("single", "relay")
BENCHMARK_FILE = "benchmark.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=METHODS, required=True, help="expert method to train and evaluate")
    parser.add_argument(
        "--snippets", nargs="+", default=list(BENCHMARK_SNIPPETS), help="snippet ids (default: the set)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default: 0)")
    parser.add_argument("--budget-steps", type=int, default=1_750_000, help="env steps per snippet (default: 1.75M)")
    parser.add_argument("--window-steps", type=int, default=60, help="relay window length in steps (default: 60)")
    parser.add_argument("--overlap-steps", type=int, default=20, help="relay window overlap in steps (default: 20)")
    parser.add_argument(
        "--curve-minutes",
        nargs="+",
        type=float,
        default=[10, 20, 35],
        help="curve points, CPU minutes (default: 10 20 35)",
    )
    parser.add_argument("--log-root", default=None, help="run folders (default: runs/long_snippets/<method>)")
    parser.add_argument("--rsi-episodes", type=int, default=1000, help="final random-start episodes (MoCapAct: 1000)")
    parser.add_argument("--start-episodes", type=int, default=100, help="final snippet-start episodes (MoCapAct: 100)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: the table of the finished runs")
    parser.add_argument("--output-json", default=None, help="also write the table's rows here")
    parser.add_argument(
        "trainer_flags", nargs="*", help="after --: more train.py flags for every run (e.g. -- --num-envs 8)"
    )
    args = parser.parse_args(argv)
    for name in ("budget_steps", "window_steps", "rsi_episodes", "start_episodes"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    if not 0 < args.overlap_steps < args.window_steps:
        parser.error(f"--overlap-steps must be in (0, --window-steps={args.window_steps}), got {args.overlap_steps}.")
    if any(m <= 0 for m in args.curve_minutes):
        parser.error(f"--curve-minutes must be positive, got {args.curve_minutes}.")
    args.log_root = Path(args.log_root or REPO_ROOT / "runs" / "long_snippets" / args.method)
    return args


#: The ``cpu`` preset's rate on this machine (1M steps in about 20 minutes of one core), for the relay's
#: curve marks before a run has measured its own.
NOMINAL_STEPS_PER_CPU_MINUTE = 50_000


def train_command(args: argparse.Namespace, snippet_id: str, seed: int) -> list[str]:
    command = [sys.executable, str(TRAIN), "--clips", snippet_id, "--seed", str(seed), "--log-root", str(args.log_root)]
    command += ["--total-timesteps", str(args.budget_steps), "--no-progress-bar", *args.trainer_flags]
    if args.method == "relay":
        marks = [str(int(m * NOMINAL_STEPS_PER_CPU_MINUTE)) for m in args.curve_minutes]
        command += ["--relay-window-steps", str(args.window_steps), "--relay-overlap-steps", str(args.overlap_steps)]
        command += ["--relay-curve-steps", *marks]
    return command


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(args: argparse.Namespace, snippet_id: str, seed: int) -> dict[str, Any]:
    """Trains (or resumes) one run; its CPU seconds accumulate in ``benchmark.json`` across resumes."""
    from mocapact_envs.files import read_json, write_json

    run_dir = args.log_root / snippet_id / str(seed)
    record_path = run_dir / BENCHMARK_FILE
    record = read_json(record_path) if record_path.is_file() else {"cpu_seconds": 0.0, "invocations": 0}
    if record.get("finished"):
        return record
    before = children_cpu_seconds()
    result = subprocess.run(train_command(args, snippet_id, seed), cwd=REPO_ROOT)
    record["cpu_seconds"] += children_cpu_seconds() - before
    record["invocations"] += 1
    record.update(method=args.method, snippet_id=snippet_id, seed=seed, budget_steps=args.budget_steps)
    record["trainer_flags"] = list(args.trainer_flags)
    if args.method == "relay":
        record.update(window_steps=args.window_steps, overlap_steps=args.overlap_steps)
    if result.returncode != 0:
        write_json(record_path, record)
        raise SystemExit(f"train.py exited {result.returncode} for {snippet_id} seed {seed}; rerun to resume.")
    record["finished"] = (run_dir / "eval_rsi" / "model" / "config.json").is_file() and is_trained(run_dir, args)
    write_json(record_path, record)
    return record


def is_trained(run_dir: Path, args: argparse.Namespace) -> bool:
    """Whether the run reached its budget or stopped early (a relay: composed, which needs every window done)."""
    evaluations = json.loads((run_dir / "evaluations.json").read_text())
    if args.method == "relay":
        return "windows" in evaluations[-1]
    import torch

    state = torch.load(run_dir / "checkpoint" / "state.pt", weights_only=True)
    return bool(state["early_stop"]["stopped"] or state["global_step"] >= args.budget_steps)


def evaluate(args: argparse.Namespace, snippet_id: str, seed: int) -> dict[str, Any]:
    """MoCapAct's evaluation of the finished expert, cached in ``final_evaluation.json`` (the sweep's record, which
    the zoo's export and table read; one written before it held the training's steps and minutes gets them)."""
    from mocapact_envs.files import read_json, write_json
    from mocapact_envs.training.run_folder import final_evaluation_record, write_final_evaluation

    run_dir = args.log_root / snippet_id / str(seed)
    path = run_dir / "final_evaluation.json"
    wanted = {"eval_rsi": args.rsi_episodes, "eval_start": args.start_episodes}
    if path.is_file():
        cached = read_json(path)
        if all(cached.get(kind, {}).get("episodes") == n for kind, n in wanted.items()):
            if "env_steps" not in cached:
                cached = final_evaluation_record(run_dir, snippet_id, {kind: cached[kind] for kind in wanted})
                write_json(path, cached)
            return cached
    return write_final_evaluation(run_dir, snippet_id, wanted, seed=seed)


def curve(
    args: argparse.Namespace, run_dir: Path, steps_per_minute: float, cpu_minutes: float, final_rsi: float
) -> dict[float, float | None]:
    """Random-start normalized length at each curve mark (CPU minutes); at the mark of the run's own CPU
    minutes (within 10%), its final evaluation's."""
    points = curve_during_training(args, run_dir, steps_per_minute)
    for minutes in points:
        if abs(minutes - cpu_minutes) <= 0.1 * minutes:
            points[minutes] = final_rsi
    return points


def curve_during_training(
    args: argparse.Namespace, run_dir: Path, steps_per_minute: float
) -> dict[float, float | None]:
    """The training run's own evaluations nearest each curve mark (20 + 5 episodes: a rough curve)."""
    points: dict[float, float | None] = {}
    if args.method == "relay":
        path = run_dir / "relay_curve.json"
        rows = json.loads(path.read_text()) if path.is_file() else []
        for minutes in args.curve_minutes:
            near = [r for r in rows if abs(r["relay_steps"] / steps_per_minute - minutes) <= 0.25 * minutes]
            points[minutes] = near[0]["eval_rsi"]["mean_norm_episode_length"] if near else None
        return points
    rows = json.loads((run_dir / "evaluations.json").read_text())
    for minutes in args.curve_minutes:
        target = minutes * steps_per_minute
        best = min(rows, key=lambda r: abs(r["global_step"] - target))
        within = abs(best["global_step"] - target) <= 0.1 * target
        points[minutes] = best["eval_rsi"]["mean_norm_episode_length"] if within else None
    return points


def zoo_rows() -> dict[str, dict[str, Any]]:
    path = REPO_ROOT / "zoo" / "table.json"
    return {row["snippet"]: row for row in json.loads(path.read_text())} if path.is_file() else {}


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{args.method}: {args.budget_steps:,} env steps a snippet (MoCapAct's protocol)")
    columns = ["snippet", "seed", "env steps", "CPU min", "rsi length", "rsi return", "start length", "start return"]
    columns += [f"rsi @{m:g} min" for m in args.curve_minutes] + ["zoo rsi / start length (return)"]
    for column in columns:
        table.add_column(column, justify="left" if column == "snippet" else "right")
    for row in rows:
        curve_cells = [("-" if v is None else f"{v:.3f}") for v in row["curve"].values()]
        zoo = row.get("zoo")
        zoo_cell = (
            f"{zoo['rsi_norm_length']:.3f} / {zoo['start_norm_length']:.3f} ({zoo['rsi_norm_return']:.3f})"
            if zoo
            else "-"
        )
        table.add_row(
            row["snippet_id"],
            str(row["seed"]),
            f"{row['env_steps']:,}",
            f"{row['cpu_minutes']:.1f}",
            f"{row['rsi_norm_length']:.3f}",
            f"{row['rsi_norm_return']:.3f}",
            f"{row['start_norm_length']:.3f}",
            f"{row['start_norm_return']:.3f}",
            *curve_cells,
            zoo_cell,
        )
    Console(width=220).print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mocapact_envs.files import read_json, write_json
    from mocapact_envs.mocap.trainable import plan_snippets

    try:  # every id named before any training starts
        plan_snippets(args.snippets, crop=False)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    zoo = zoo_rows()
    rows = []
    for snippet_id in args.snippets:
        for seed in args.seeds:
            run_dir = args.log_root / snippet_id / str(seed)
            if args.report_only:
                if not (run_dir / BENCHMARK_FILE).is_file() or not read_json(run_dir / BENCHMARK_FILE).get("finished"):
                    continue
                record = read_json(run_dir / BENCHMARK_FILE)
            else:
                record = train(args, snippet_id, seed)
                if not record["finished"]:
                    print(f"{snippet_id} seed {seed}: not finished; rerun to resume.", file=sys.stderr)
                    continue
            final = evaluate(args, snippet_id, seed)
            env_steps = int(final["env_steps"])
            cpu_minutes = record["cpu_seconds"] / 60
            rows.append(
                {
                    "method": args.method,
                    "snippet_id": snippet_id,
                    "seed": seed,
                    "env_steps": env_steps,
                    "cpu_minutes": cpu_minutes,
                    **{
                        f"{label}_norm_{metric}": final[kind][f"mean_norm_episode_{metric}"]
                        for kind, label in (("eval_rsi", "rsi"), ("eval_start", "start"))
                        for metric in ("length", "return")
                    },
                    "episodes": {kind: final[kind]["episodes"] for kind in ("eval_rsi", "eval_start")},
                    "curve": curve(
                        args,
                        run_dir,
                        env_steps / max(cpu_minutes, 1e-9),
                        cpu_minutes,
                        final["eval_rsi"]["mean_norm_episode_length"],
                    ),
                    "zoo": zoo.get(snippet_id),
                }
            )
    if not rows:
        print("no finished run to report.", file=sys.stderr)
        return 0
    report(args, rows)
    if args.output_json:
        write_json(args.output_json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
