"""Compare the learning curves of several expert runs (for instance two settings on one clip).

    .venv/bin/python baselines/ppo_expert/compare.py runs/experts/CMU_016_22-0-82/0 \
        runs/experts_linear/CMU_016_22-0-82/0 --labels "constant, then annealed" "linear from 0" \
        --plot learning_curves.png

Reads each run's ``evaluations.json`` (written by ``train.py``, kept in its checkpoint so resumed
runs stay whole). Plots normalized episode length from random starts and from the snippet start,
and the random-start normalized return, against env steps and training minutes: each evaluation
as a faint dot and a rolling mean over ``--window`` evaluations as a line, since the ``cpu`` preset's
20-episode evaluations are noisy. Prints each run's means over windows of training minutes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from mocapact_envs.evaluation.plotting import save_figure, subplots
from mocapact_envs.training.scripts import run_cli

#: (evaluation kind, metric, axis label, table column) of each plotted row.
CURVES = (
    ("eval_rsi", "mean_norm_episode_length", "random starts: norm. episode length", "rsi length"),
    ("eval_start", "mean_norm_episode_length", "snippet start: norm. episode length", "start length"),
    ("eval_rsi", "mean_norm_episode_return", "random starts: norm. return", "rsi return"),
)


@dataclass
class Args:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """run folders (<root>/<clip>-<start>-<end>/<seed>) holding evaluations.json"""
    labels: tuple[str, ...] = ()
    """legend labels, one per run in order; unset: each run's log root and seed"""
    window: int = 10
    """evaluations per rolling mean (1: no smoothing)"""
    minutes_per_row: float = 20.0
    """width of the training-minute windows of the printed table"""
    steps_per_row: int | None = None
    """width of env-step windows of the printed table instead (runs that shared a loaded machine compare better at
    equal steps than at equal minutes); unset: training-minute windows"""
    plot: str = "expert_learning_curves.png"
    """PNG to write"""
    title: str | None = None
    """plot title; unset: none"""


def read_evaluations(run: Path) -> dict[str, np.ndarray]:
    """Env steps, training minutes and every plotted metric of one run's evaluations, as arrays."""
    path = run / "evaluations.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; give run folders written by baselines/ppo_expert/train.py.")
    records = json.loads(path.read_text())
    if not records:
        raise ValueError(f"{path} holds no evaluations yet.")
    curve = {
        "steps": np.array([r["global_step"] for r in records]),
        "minutes": np.array([r["training_minutes"] for r in records]),
    }
    for kind, metric, *_ in CURVES:
        curve[f"{kind}/{metric}"] = np.array([r[kind][metric] for r in records])
    return curve


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each value and the up to ``window - 1`` before it."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def print_windows(label: str, curve: dict[str, np.ndarray], minutes_per_row: float, steps_per_row: int | None) -> None:
    print(f"{label}: {len(curve['steps'])} evaluations to step {curve['steps'][-1]:,} ({curve['minutes'][-1]:.1f} min)")
    print("  minutes   env steps     " + "".join(f"{column:>14}" for *_, column in CURVES))
    by, width = ("steps", steps_per_row) if steps_per_row else ("minutes", minutes_per_row)
    for low in np.arange(0.0, curve[by][-1], width):
        inside = (curve[by] >= low) & (curve[by] < low + width)
        if not inside.any():
            continue
        steps, minutes = curve["steps"][inside], curve["minutes"][inside]
        means = "".join(f"{curve[f'{kind}/{metric}'][inside].mean():14.3f}" for kind, metric, *_ in CURVES)
        print(f"  {minutes[0]:3.0f}-{minutes[-1]:<3.0f}  {steps[0] / 1e6:5.2f}-{steps[-1] / 1e6:5.2f}M{means}")


def main(args: Args) -> int:
    if args.labels and len(args.labels) != len(args.runs):
        print(f"error: --labels has {len(args.labels)} entries for {len(args.runs)} runs.", file=sys.stderr)
        return 2
    if args.steps_per_row is not None and args.steps_per_row < 1:
        print(f"error: --steps-per-row must be >= 1, got {args.steps_per_row}.", file=sys.stderr)
        return 2
    if args.window < 1:
        print(f"error: --window must be >= 1, got {args.window}.", file=sys.stderr)
        return 2
    try:
        curves = [read_evaluations(Path(run)) for run in args.runs]
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    labels = args.labels or tuple(f"{Path(run).parent.parent.name} seed {Path(run).name}" for run in args.runs)

    figure, axes = subplots(len(CURVES), 2, figsize=(11, 3.2 * len(CURVES)), sharex="col", sharey="row")
    for index, (label, curve) in enumerate(zip(labels, curves, strict=True)):
        print_windows(label, curve, args.minutes_per_row, args.steps_per_row)
        color = f"C{index}"
        for row, (kind, metric, name, _) in enumerate(CURVES):
            values = curve[f"{kind}/{metric}"]
            for column, x in enumerate((curve["steps"], curve["minutes"])):
                axes[row, column].plot(x, values, ".", color=color, alpha=0.25, markersize=3)
                axes[row, column].plot(x, rolling_mean(values, args.window), color=color, label=label)
            axes[row, 0].set_ylabel(name)
    axes[-1, 0].set_xlabel("env steps")
    axes[-1, 1].set_xlabel("training minutes")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(title=f"rolling mean of {args.window}")
    save_figure(figure, args.plot, title=args.title)
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
