"""Where a clip expert's episodes drift from the reference before they end.

    .venv/bin/python baselines/ppo_expert/drift.py zoo/experts/CMU_009_12-0-198/0

MoCapAct's tracking error is ``0.5 * mean body position error + 0.5 * mean joint error``, with body positions in
the world frame: a walker that tracks every joint but runs a little behind or beside the reference ends its episode
all the same, and a time-indexed expert (MoCapAct's observations: the body's own sensors and the time) cannot see
where the reference is. This splits each step of an expert's episodes into the root's lag along the reference's
direction of travel, its sideways offset, its height below the reference, the mean joint error and the body term,
averaged over the episodes still running that many steps after their start. Prints the table and writes
``drift.json`` and ``drift.png`` to ``--out-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

from mocapact_envs.envs.factory import make_tracking_env
from mocapact_envs.evaluation.plotting import save_figure, subplots
from mocapact_envs.evaluation.protocol import EVAL_SETTINGS
from mocapact_envs.evaluation.root_orientation import heading_and_tilt
from mocapact_envs.files import write_json
from mocapact_envs.mocap.source import get_source
from mocapact_envs.policies.expert_files import find_model_dir, load_expert
from mocapact_envs.policies.run_layout import CLIP_INFO_FILE, read_clip_info
from mocapact_envs.tasks.tracking_settings import TERMINATION_ERROR_THRESHOLD
from mocapact_envs.training.scripts import run_cli

#: The columns of one step's row, in order, with their plot labels: three of the root's position drift, two of its
#: orientation, three errors.
COLUMN_LABELS = {
    "lag": "root behind the reference (m)",
    "sideways": "root beside it (m)",
    "height": "root below it (m)",
    "heading": "root heading error (deg)",
    "tilt": "root tilt error (deg)",
    "joint_error": "mean joint error (rad)",
    "body_error": "mean body error (m, world frame)",
    "tracking_error": "tracking error",
}
COLUMNS = tuple(COLUMN_LABELS)
DRIFT_COLUMNS = 5  # the first five are drawn in the drift panel (metres and degrees), the rest in the errors one


@dataclass
class Args:
    expert: tyro.conf.Positional[str]
    """run folder (<root>/<clip>-<start>-<end>/<seed>), eval_rsi/eval_start folder or model folder"""
    kind: str = "eval_start"
    """which of MoCapAct's evaluations the episodes are (eval_start: from the snippet start, action noise 0.01;
    eval_rsi: from random starts, noise 0.1)"""
    episodes: int = 12
    """episodes to follow"""
    seed: int = 100
    """seed of the first episode (each next one adds 1)"""
    every: int = 10
    """print every this many steps since the episodes' start"""
    out_dir: str | None = None
    """where drift.json and drift.png go; unset: <run folder>/evaluation"""


def snippet_of(args: Args, expert) -> str:
    clip_info = Path(args.expert) / CLIP_INFO_FILE
    snippet = read_clip_info(clip_info).id if clip_info.is_file() else getattr(expert, "snippet_id", None)
    if snippet is None:
        raise ValueError(f"{args.expert} names no snippet (no clip_info.json, no snippet_id in its config).")
    return snippet


def episode_drift(env, expert, reference: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """One episode's rows (steps, len(COLUMNS)): the walker's root and joints against the reference at its step."""
    observation, info = env.reset(seed=seed)
    last_step = len(reference["position"]) - 1
    rows = []
    while True:
        action, _ = expert.predict(observation, deterministic=True)
        observation, _, terminated, truncated, info = env.step(action)
        step = int(np.rint(info["time_in_clip"] * last_step))
        qpos = info["physics_state"][: 7 + reference["joints"].shape[1]]
        heading = reference["position"][min(step + 1, last_step), :2] - reference["position"][max(step - 1, 0), :2]
        heading /= max(np.linalg.norm(heading), 1e-9)
        offset = qpos[:2] - reference["position"][step, :2]
        joint_error = float(np.mean(np.abs(qpos[7:] - reference["joints"][step])))
        heading_error, tilt_error = np.degrees(heading_and_tilt(qpos[3:7], reference["quaternion"][step]))
        error = float(info["tracking_error"])
        rows.append(
            (
                -offset @ heading,  # positive: behind the reference
                offset @ np.array([-heading[1], heading[0]]),
                reference["position"][step, 2] - qpos[2],  # positive: below it
                float(heading_error),
                float(tilt_error),
                joint_error,
                2 * error - joint_error,  # error = 0.5 * body + 0.5 * joint
                error,
            )
        )
        if terminated or truncated:
            return np.array(rows)


def main(args: Args) -> int:
    if args.kind not in EVAL_SETTINGS:
        raise ValueError(f"--kind {args.kind!r}; choose one of {', '.join(EVAL_SETTINGS)}.")
    expert = load_expert(args.expert)
    snippet = snippet_of(args, expert)
    setting = EVAL_SETTINGS[args.kind]
    env = make_tracking_env(
        snippet,
        observables=list(expert.observation_keys),
        random_start=setting.random_start,
        act_noise=setting.act_noise,
    )
    reference = get_source().clip_set(snippet).reference_features(0)
    episodes = [episode_drift(env, expert, reference, args.seed + i) for i in range(args.episodes)]
    env.close()

    longest = max(len(e) for e in episodes)
    alive = np.array([sum(len(e) > k for e in episodes) for k in range(longest)])
    means = np.array([np.mean([e[k] for e in episodes if len(e) > k], axis=0) for k in range(longest)])
    table = Table(title=f"{snippet}: {args.kind}, {args.episodes} episodes, means over those still running (m, rad)")
    for name in ("steps since start", "running", *COLUMNS):
        table.add_column(name, justify="right")
    for k in [*range(0, longest, args.every), longest - 1]:
        table.add_row(
            str(k + 1),
            str(alive[k]),
            *(
                f"{v:+.1f}" if name in ("heading", "tilt") else f"{v:+.3f}"
                for name, v in zip(COLUMNS, means[k], strict=True)
            ),
        )
    Console(width=max(Console().width, 110)).print(table)
    lengths = [len(e) for e in episodes]
    print(f"episode lengths: mean {np.mean(lengths):.1f}, min {min(lengths)}, max {max(lengths)}")

    out_dir = Path(args.out_dir) if args.out_dir else find_model_dir(args.expert).parents[1] / "evaluation"
    write_json(
        out_dir / "drift.json",
        {"snippet_id": snippet, "kind": args.kind, "columns": list(COLUMNS), "running": alive.tolist(),
         "means": means.round(5).tolist(), "episode_lengths": lengths},
    )  # fmt: skip
    figure, (drift_axes, error_axes) = subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, longest + 1)
    for k, label in enumerate(COLUMN_LABELS.values()):
        (drift_axes if k < DRIFT_COLUMNS else error_axes).plot(steps, means[:, k], label=label)
    drift_axes.set(xlabel="steps since the episode's start", ylabel="metres, degrees", title="Root drift")
    error_axes.axhline(TERMINATION_ERROR_THRESHOLD, color="k", linestyle=":", label="termination threshold")
    error_axes.set(xlabel="steps since the episode's start", title="Errors")
    for axes in (drift_axes, error_axes):
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    title = f"{snippet}, {args.kind}: {args.episodes} episodes, mean length {np.mean(lengths):.0f} steps"
    save_figure(figure, out_dir / "drift.png", title)
    print(f"wrote {out_dir / 'drift.json'} and {out_dir / 'drift.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main, Args)
