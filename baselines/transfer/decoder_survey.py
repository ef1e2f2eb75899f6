"""Survey what motions an NPMP decoder produces when its latent space is explored without a task policy.

    .venv/bin/python baselines/transfer/decoder_survey.py --low-level-policy runs/npmp/best/low_level_policy \
        --episodes 50 --output-json runs/survey.json --plot runs/survey.png

Evidence for a transfer run on the decoder's latent space that does no better than raw actions:
can the latents the task policy starts from (the NPMP prior) make the walker walk, how fast,
and does it turn? The walker starts each episode in the standing start of ``--task`` (its
command or target is ignored) and acts for ``--episode-steps`` steps (0.03 s each) or until
it falls (the task ends the episode when anything but a foot touches the floor), under one
of these kinds of action sequence:

* ``iid``: a latent drawn from N(0, I) every step: the standard-normal prior MoCapAct's NPMP
  was trained with, what a freshly initialised task policy with a wide action std sends;
* ``ar1``: latents from the AR(1) prior ``z_t = alpha z_(t-1) + sqrt(1 - alpha^2) eps`` with
  ``alpha`` = ``--ar-alpha``: each latent still N(0, I), but smooth in time;
* ``constant``: one latent from N(0, I) held for the whole episode;
* ``raw_noise``, ``raw_zero``: references without the decoder: raw actuator actions from
  N(0, ``--raw-std``^2) (clipped to [-1, 1]), or all zero.

Per episode (``mocapact_envs.evaluation.locomotion.motion_metrics``): steps survived, mean
planar speed (the horizontal velocity VelocityControl rewards), net speed (straight-line root
displacement over the time survived), best 1 s speed (the largest root displacement over any
``--walk-seconds`` window, per second), turn rate (net change of the root's heading per second)
and the share of the episode's steps faster than ``--walk-speed``; and the task's return
over the episode, what a task policy gets from these actions before it learns anything (for
``go_to_target`` also the distance to the first target at the start and the closest the root
came to it: the reward needs 1 m). VelocityControl reports its torso velocity; for GoToTarget
the planar speed is the root's displacement per step. Speeds of an episode that
fell include the fall. An episode **walks** when the walker does not fall before the episode
ends and its best 1 s speed is above ``--walk-speed``: it covered more than
``walk_speed * walk_seconds`` metres within ``walk_seconds`` and stayed up.

Prints a table per kind (median / mean over the episodes, and the net speed and turn rate of
the survivors alone, the episodes that did not fall) and the share of episodes that walk;
``--output-json`` keeps every episode's metrics, ``--plot`` draws mean speed against turn rate
(hollow markers: episodes that fell) and the histogram of steps survived.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from mocapact_envs.evaluation.locomotion import motion_metrics, root_planar_pose, summarize_motion
from mocapact_envs.evaluation.plotting import save_figure, subplots
from mocapact_envs.files import write_json
from mocapact_envs.policies.low_level import as_low_level_policy, low_level_policy_path
from mocapact_envs.training.scripts import run_cli, seed_everything
from mocapact_envs.wrappers.latent_actions import LowLevelActionWrapper, prior_latents

Kind = Literal["iid", "ar1", "constant", "raw_noise", "raw_zero"]
#: Every kind of action sequence, in table order, with what it is.
KINDS: dict[str, str] = {
    "iid": "latent from N(0, I) each step (the standard-normal prior)",
    "ar1": "AR(1) prior latents (smooth, alpha = --ar-alpha)",
    "constant": "one latent from N(0, I) held all episode",
    "raw_noise": "no decoder: raw actions from N(0, raw_std^2)",
    "raw_zero": "no decoder: zero raw actions",
}
LATENT_KINDS = ("iid", "ar1", "constant")
#: The transfer tasks whose standing start the survey can run from, by their ``train.py --task`` names.
TASK_ENV_IDS = {"velocity_control": "mocapact/VelocityControl-v0", "go_to_target": "mocapact/GoToTarget-v0"}
#: Seconds per environment step (VelocityControl's default, MoCapAct's).
CONTROL_TIMESTEP = 0.03


@dataclass
class Args:
    low_level_policy: str = "pretrained"
    """Decoder to survey: the directory of a saved LowLevelPolicy (such as baselines/distill's
    <run>/best/low_level_policy), or "pretrained" for the decoder shipped with the package."""
    kinds: tuple[Kind, ...] = tuple(KINDS)  # type: ignore[assignment]
    """Kinds of action sequence to run (see the module docstring): iid, ar1 and constant drive the decoder,
    raw_noise and raw_zero are raw-action references that need no decoder."""
    task: Literal["velocity_control", "go_to_target"] = "velocity_control"
    """The transfer task whose standing start, episode end and reward the episodes run in."""
    episodes: int = 50
    """Episodes per kind."""
    episode_steps: int = 150
    """Steps per episode, 0.03 s each (150: 4.5 s); an episode ends earlier when the walker falls."""
    ar_alpha: float = 0.95
    """Correlation of the ar1 kind's successive latents, in [0, 1) (0.95: latents change over about 20
    steps, 0.6 s)."""
    raw_std: float = 0.1
    """Standard deviation of the raw_noise kind's Gaussian actions (actions are in [-1, 1])."""
    walk_speed: float = 0.5
    """Speed threshold in m/s: of the time-above-speed share and of the walk definition."""
    walk_seconds: float = 1.0
    """Window in seconds over which a walking episode must keep up more than walk_speed (rounded to whole
    steps); at most the episode's duration."""
    seed: int = 0
    """Seed of everything: episode i resets the environment with seed + i, and each kind's action
    sequences draw from a generator seeded with (seed, kind, episode)."""
    output_json: Path | None = None
    """Write the settings, each kind's summary and every episode's metrics here."""
    plot: Path | None = None
    """Write a PNG here: mean speed against absolute turn rate per episode, and the histogram of steps survived."""


def check_args(args: Args) -> None:
    """Raises ``ValueError`` naming the first bad value and what would be valid."""
    if args.task not in TASK_ENV_IDS:
        raise ValueError(f"unknown --task {args.task!r}; choose one of {', '.join(TASK_ENV_IDS)}.")
    unknown = [kind for kind in args.kinds if kind not in KINDS]
    if unknown or not args.kinds:
        raise ValueError(f"unknown or no --kinds {list(unknown)}; choose one or more of {', '.join(KINDS)}.")
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}.")
    if args.episode_steps < 1:
        raise ValueError(f"--episode-steps must be >= 1, got {args.episode_steps}.")
    if not 0.0 <= args.ar_alpha < 1.0:
        raise ValueError(f"--ar-alpha must be in [0, 1), got {args.ar_alpha} (0 is the iid kind, 1 the constant kind).")
    if not args.raw_std > 0:
        raise ValueError(f"--raw-std must be > 0, got {args.raw_std} (the raw_zero kind is zero actions).")
    if not args.walk_speed > 0:
        raise ValueError(f"--walk-speed must be > 0 m/s, got {args.walk_speed}.")
    duration = args.episode_steps * CONTROL_TIMESTEP
    if not 0 < args.walk_seconds <= duration + 1e-9:
        raise ValueError(
            f"--walk-seconds must be in (0, {duration:g}], the duration of an episode of {args.episode_steps} "
            f"steps; got {args.walk_seconds}."
        )


def action_sequence(kind: str, rng: np.random.Generator, args: Args, size: int) -> np.ndarray:
    """The ``(episode_steps, size)`` actions of one episode: latents for the decoder, or raw actions."""
    steps = args.episode_steps
    if kind == "iid":
        return prior_latents(rng, steps, size, alpha=0.0)
    if kind == "ar1":
        return prior_latents(rng, steps, size, alpha=args.ar_alpha)
    if kind == "constant":
        return prior_latents(rng, steps, size, alpha=1.0)
    if kind == "raw_noise":
        return np.clip(rng.normal(0.0, args.raw_std, (steps, size)), -1.0, 1.0).astype(np.float32)
    if kind == "raw_zero":
        return np.zeros((steps, size), np.float32)
    raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}.")


def run_episode(env: gym.Env, actions: np.ndarray, seed: int, args: Args) -> dict:
    """Steps ``env`` with ``actions`` until they run out or the walker falls; the episode's motion metrics,
    its return, and on GoToTarget its distances to the first target."""
    _, info = env.reset(seed=seed)
    position, heading = root_planar_pose(info["physics_state"])
    positions, headings, velocities = [position], [heading], []
    first_target = info.get("target_position")
    distances = [] if first_target is None else [float(np.linalg.norm(position - first_target))]
    fell, task_return = False, 0.0
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        task_return += float(reward)
        position, heading = root_planar_pose(info["physics_state"])
        # VelocityControl reports the torso velocity it rewards; elsewhere the root's displacement per step.
        velocities.append(info.get("torso_velocity", (position - positions[-1]) / CONTROL_TIMESTEP))
        positions.append(position)
        headings.append(heading)
        if first_target is not None:
            distances.append(float(np.linalg.norm(position - first_target)))
        if terminated or truncated:
            fell = terminated
            break
    task = {"task_return": task_return}
    if distances:
        task |= {"start_target_distance": distances[0], "closest_target_distance": min(distances)}
    return task | motion_metrics(
        np.array(positions),
        np.array(headings),
        np.array(velocities),
        fell=fell,
        episode_steps=args.episode_steps,
        dt=CONTROL_TIMESTEP,
        walk_speed=args.walk_speed,
        walk_steps=walk_steps(args),
    )


def walk_steps(args: Args) -> int:
    return max(1, round(args.walk_seconds / CONTROL_TIMESTEP))


def median_and(summary: dict | None, name: str, second: str = "mean", digits: int = 2) -> str:
    """``"median / <second>"`` of one metric of a summary; ``"-"`` without one (no episode survived)."""
    if summary is None:
        return "-"
    return f"{summary[name]['median']:.{digits}f} / {summary[name][second]:.{digits}f}"


def survey_table(summaries: dict[str, dict], args: Args) -> Table:
    """A row per kind: the fractions that fell and walked, and median / mean of each motion metric."""
    seconds = walk_steps(args) * CONTROL_TIMESTEP
    table = Table(
        title=f"{args.episodes} episodes per kind, up to {args.episode_steps} steps "
        f"({args.episode_steps * CONTROL_TIMESTEP:g} s); median / mean over episodes (best {seconds:.2g} s speed "
        "and survivors, the episodes that did not fall: median / max)"
    )
    table.add_column("kind", no_wrap=True)
    for name in (
        "fell",
        "steps survived",
        "mean speed (m/s)",
        "net speed (m/s)",
        f"best {seconds:.2g} s speed (m/s)",
        "|turn rate| (rad/s)",
        f"time > {args.walk_speed:g} m/s",
        "walks",
        "survivors: net speed (m/s)",
        "survivors: |turn rate| (rad/s)",
        "return",
    ):
        table.add_column(name, justify="right")
    for kind, summary in summaries.items():
        survivors = summary["survivors"]
        table.add_row(
            kind,
            f"{summary['fell_fraction']:.0%}",
            median_and(summary, "steps", digits=0),
            median_and(summary, "mean_speed"),
            median_and(summary, "net_speed"),
            median_and(summary, "best_window_speed", "max"),
            median_and(summary, "abs_turn_rate"),
            f"{summary['moving_fraction']['mean']:.0%}",
            f"{summary['walk_fraction']:.0%}",
            median_and(survivors, "net_speed", "max"),
            median_and(survivors, "abs_turn_rate", "max"),
            median_and(summary, "task_return"),
        )
    return table


def plot_survey(path: Path, episodes: dict[str, list[dict]], args: Args) -> None:
    figure, (scatter, histogram) = subplots(1, 2, figsize=(12, 4.8))
    bins = np.linspace(0, args.episode_steps, min(args.episode_steps, 30) + 1)
    for index, (kind, results) in enumerate(episodes.items()):
        color = f"C{index}"
        for fell, marker_face in ((False, color), (True, "none")):
            chosen = [e for e in results if e["fell"] == fell]
            if chosen:
                scatter.scatter(
                    [e["mean_speed"] for e in chosen],
                    [e["abs_turn_rate"] for e in chosen],
                    facecolors=marker_face,
                    edgecolors=color,
                    alpha=0.8,
                    label=None if fell else kind,
                )
        if all(e["fell"] for e in results):  # no filled marker labelled the kind
            scatter.scatter([], [], facecolors="none", edgecolors=color, label=kind)
        histogram.hist(
            [e["steps"] for e in results], bins=bins, histtype="step", linewidth=1.5, color=color, label=kind
        )
    scatter.axvline(args.walk_speed, color="grey", linestyle=":", linewidth=1)
    scatter.set(
        xlabel="mean planar speed (m/s)",
        ylabel="|turn rate| (rad/s)",
        title="per episode (hollow: fell)",
    )
    histogram.set(xlabel="steps survived", ylabel="episodes", title=f"survival (episode: {args.episode_steps} steps)")
    for axes in (scatter, histogram):
        axes.grid(alpha=0.3)
        axes.legend()
    save_figure(figure, path, title=f"decoder survey: {args.low_level_policy}, {args.task}")


def main(args: Args) -> dict:
    check_args(args)
    kinds = list(dict.fromkeys(args.kinds))
    seed_everything(args.seed)
    env_id = TASK_ENV_IDS[args.task]
    env = gym.make(
        env_id,
        episode_steps=args.episode_steps,
        max_episode_steps=args.episode_steps,
        control_timestep=CONTROL_TIMESTEP,
    )
    decoder_env = None
    if any(kind in LATENT_KINDS for kind in kinds):
        policy_dir = low_level_policy_path(args.low_level_policy)
        decoder_env = LowLevelActionWrapper(env, as_low_level_policy(policy_dir))
        print(f"decoder: {policy_dir} (latent size {decoder_env.policy.latent_size})")

    episodes: dict[str, list[dict]] = {}
    progress = tqdm(total=len(kinds) * args.episodes, desc="survey", unit="episode")
    for kind in kinds:
        progress.set_postfix_str(kind)
        kind_env = decoder_env if kind in LATENT_KINDS else env
        size = kind_env.action_space.shape[0]
        episodes[kind] = []
        for episode in range(args.episodes):
            rng = np.random.default_rng([args.seed, list(KINDS).index(kind), episode])
            actions = action_sequence(kind, rng, args, size)
            episodes[kind].append(run_episode(kind_env, actions, args.seed + episode, args))
            progress.update(1)
    progress.close()
    env.close()

    summaries = {kind: summarize_motion(results) for kind, results in episodes.items()}
    Console(width=200).print(survey_table(summaries, args))
    walk_definition = (
        f"did not fall in {args.episode_steps} steps and the root moved more than {args.walk_speed:g} m/s x "
        f"{walk_steps(args) * CONTROL_TIMESTEP:.3g} s within some {walk_steps(args)}-step window"
    )
    counts = ", ".join(f"{kind} {sum(e['walks'] for e in episodes[kind])}/{len(episodes[kind])}" for kind in kinds)
    print(f"episodes that walk ({walk_definition}): {counts}")
    if args.task == "go_to_target":
        for kind in kinds:
            starts = [e["start_target_distance"] for e in episodes[kind]]
            gains = [e["start_target_distance"] - e["closest_target_distance"] for e in episodes[kind]]
            print(
                f"{kind}: first target {np.median(starts):.2f} m away (median), the root came at most "
                f"{np.median(gains):.2f} m (median) / {max(gains):.2f} m (max) closer to it"
            )

    report = {
        "env_id": env_id,
        "low_level_policy": None if decoder_env is None else str(policy_dir),
        "kinds": kinds,
        "kind_descriptions": {kind: KINDS[kind] for kind in kinds},
        "episodes": args.episodes,
        "episode_steps": args.episode_steps,
        "control_timestep": CONTROL_TIMESTEP,
        "ar_alpha": args.ar_alpha,
        "raw_std": args.raw_std,
        "walk_speed": args.walk_speed,
        "walk_steps": walk_steps(args),
        "walk_definition": walk_definition,
        "seed": args.seed,
        "summary": summaries,
        "per_episode": episodes,
    }
    if args.output_json:
        write_json(args.output_json, report)
        print(f"metrics: {args.output_json}")
    if args.plot:
        plot_survey(args.plot, episodes, args)
        print(f"plot: {args.plot}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
