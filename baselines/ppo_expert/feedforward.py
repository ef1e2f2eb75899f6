"""Is a snippet physically trackable, and how far does feedback around a tracking plan hold under noise?

    .venv/bin/python baselines/ppo_expert/feedforward.py --snippet CMU_009_12-0-198

Plans the snippet with receding-horizon iLQR on the tracking task's own physics
(:mod:`mocapact_envs.training.trajectory_optimization`; about 7 minutes of one core for 198 steps), then measures
in the fast tracking environments, MoCapAct's evaluation settings (random starts with action noise 0.1, snippet
starts with 0.01):

- the plan's actions replayed open loop without noise: the tracking error at every step (``tracking_error.png``);
- three controllers, normalised episode length from random starts and from the snippet start: the reference
  actions open loop (what the ``cpu`` preset's residual experts start from), the plan's actions open loop, and the
  plan's actions with its linear feedback on the simulation's full state.

The plan (states, actions, gains and the settings it was made with) is written to ``<out-dir>/plan.npz`` and reused
by the next run with the same settings (``--replan`` plans again); the measured figures go to ``results.json``. The plan is derived from the clip: keep it out of the repository,
as the clips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from mocapact_envs.envs.factory import batched_observation
from mocapact_envs.evaluation.metrics import summarize
from mocapact_envs.evaluation.plotting import save_figure, subplots
from mocapact_envs.evaluation.protocol import make_eval_vec_env, run_episodes
from mocapact_envs.files import replace_atomically, write_json
from mocapact_envs.tasks.reference_actions import TIME_KEY, ReferenceActions
from mocapact_envs.tasks.tracking_settings import TERMINATION_ERROR_THRESHOLD
from mocapact_envs.training.scripts import run_cli
from mocapact_envs.training.trajectory_optimization import (
    ControlStep,
    SnippetProblem,
    TrackingPlan,
    receding_horizon_plan,
)

PLAN_FILE = "plan.npz"
#: The Args fields a saved plan was made with; a plan of other values is made again.
PLAN_SETTINGS = ("horizon", "commit", "iterations", "tolerance")


@dataclass
class Args:
    """Plan a snippet by trajectory optimisation and measure how the plan's controllers track it."""

    snippet: str = "CMU_009_12-0-198"
    """snippet id (clip-start-end) to plan"""
    out_dir: Path | None = None
    """where plan.npz, results.json and tracking_error.png go (default: runs/feedforward/<snippet>)"""
    horizon: int = 30
    """steps of each optimised window"""
    commit: int = 10
    """steps of each window kept before the next window is planned from where they end"""
    iterations: int = 8
    """most iLQR iterations per window"""
    tolerance: float = 0.01
    """a window stops once an iteration lowers its cost by less than this fraction"""
    episodes: int = 20
    """episodes per controller and start kind (MoCapAct's final evaluation: 1000 random starts, 100 snippet starts)"""
    num_envs: int = 4
    """parallel evaluation environments"""
    seed: int = 1
    """seed of the evaluation episodes"""
    replan: bool = False
    """plan again even if out_dir holds a plan of this snippet"""


def plan_snippet(args: Args, out_dir: Path, problem: SnippetProblem) -> TrackingPlan:
    """The snippet's plan: loaded from ``out_dir``, or made and saved there."""
    cost, start, num_steps = problem.cost, problem.start, problem.num_steps
    path = out_dir / PLAN_FILE
    settings = {"snippet": args.snippet, **{name: getattr(args, name) for name in PLAN_SETTINGS}}
    if path.exists() and not args.replan:
        with np.load(path) as saved:
            differing = {k: saved[k].item() for k in settings if k not in saved or saved[k].item() != settings[k]}
            if not differing and len(saved["actions"]) == num_steps and np.allclose(saved["states"][0], start):
                print(f"plan: {path} (--replan to plan again)")
                return TrackingPlan(saved["states"], saved["actions"], saved["gains"], list(saved["window_costs"]))
        print(f"{path} holds a plan of other settings or motion ({differing or 'its start or length'}): planning again")
    with tqdm(total=num_steps, desc=f"planning {args.snippet}", unit="step") as bar:

        def progress(kept: int, window_cost: float) -> None:
            bar.update(kept - bar.n)
            bar.set_postfix(window_cost=f"{window_cost:.1f}")

        plan = receding_horizon_plan(
            cost, start, num_steps, args.horizon, args.commit, args.iterations, args.tolerance, progress
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = dict(
        **{name: np.array(value) for name, value in settings.items()},
        states=plan.states,
        actions=plan.actions,
        gains=plan.gains,
        window_costs=np.array(plan.window_costs),
    )
    replace_atomically(path, lambda tmp: np.savez(tmp, **arrays))
    return plan


def table_actor(table: np.ndarray) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """Open loop: the table's row (float64, as planned) at each environment's observed step."""
    actions = ReferenceActions(np.asarray(table, np.float64))
    return lambda observation: actions.at(observation[TIME_KEY])


def feedback_actor(plan: TrackingPlan, table: np.ndarray, envs, step: ControlStep):
    """The plan's action with its linear feedback on each world's physics state."""
    steps = ReferenceActions(np.asarray(table, np.float64))

    def act(observation: Mapping[str, np.ndarray]) -> np.ndarray:
        states = envs.unwrapped.physics_states()
        time_steps = steps.step_index(observation[TIME_KEY][:, 0])
        last = len(plan.actions) - 1
        return np.stack(
            [plan.feedback_action(step, state, min(int(t), last)) for state, t in zip(states, time_steps, strict=True)]
        )

    return act


def open_loop_replay(args: Args, table: np.ndarray, plan: TrackingPlan) -> tuple[np.ndarray, float]:
    """The tracking error after every step of the table's actions played from the snippet start without noise, and
    the largest distance (max abs over qpos, qvel, act) of the environment's state from the plan's."""
    envs = make_eval_vec_env(args.snippet, "eval_start", 1, backend="fast", observables=(TIME_KEY,), act_noise=0.0)
    try:
        observation, _ = envs.reset(seed=args.seed)
        act = table_actor(table)
        errors, gap = [], 0.0
        for t in range(1, len(plan.states)):
            observation, _, terminated, truncated, info = envs.step(act(batched_observation(observation, 1)))
            errors.append(float(info["tracking_error"][0]))
            gap = max(
                gap, float(np.abs(info["physics_state"][0] - plan.states[t, : len(info["physics_state"][0])]).max())
            )
            if terminated[0] or truncated[0]:
                break
        return np.array(errors), gap
    finally:
        envs.close()


def main(args: Args) -> None:
    for name in ("horizon", "commit", "iterations", "episodes", "num_envs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    out_dir = args.out_dir or Path("runs/feedforward") / args.snippet
    problem = SnippetProblem.for_snippet(args.snippet)
    plan = plan_snippet(args, out_dir, problem)
    num_steps, reference_actions = problem.num_steps, problem.cost.reference_actions
    # A table per step the environment can reach: the plan's actions, then the reference's for the last step.
    plan_table = np.concatenate([plan.actions, reference_actions[len(plan.actions) :]])
    errors, gap = open_loop_replay(args, plan_table, plan)
    figure, axis = subplots(figsize=(7, 3.5))
    axis.plot(np.arange(1, len(errors) + 1), errors)
    threshold = TERMINATION_ERROR_THRESHOLD
    axis.axhline(threshold, color="k", linestyle=":", label=f"termination ({threshold})")
    axis.set(xlabel="step", ylabel="tracking error", ylim=(0, max(0.35, 1.05 * errors.max())))
    axis.legend()
    save_figure(figure, out_dir / "tracking_error.png", f"{args.snippet}: the plan's actions open loop, no noise")

    results: dict = {
        "snippet": args.snippet,
        "open_loop_plan": {
            "steps": len(errors),
            "held_whole_snippet": bool(len(errors) == num_steps and errors.max() <= TERMINATION_ERROR_THRESHOLD),
            "max_state_gap_from_plan": gap,
            "mean_tracking_error": float(errors.mean()),
            "max_tracking_error": float(errors.max()),
        },
        "controllers": {},
    }
    table = Table(title=f"{args.snippet}: normalized episode length ({args.episodes} episodes each)")
    for column in ("controller", "random starts (noise 0.1)", "snippet start (noise 0.01)"):
        table.add_column(column)
    # Each controller made for the envs it acts in (the feedback reads their physics states).
    controllers = {
        "reference actions, open loop": lambda envs: table_actor(reference_actions),
        "plan's actions, open loop": lambda envs: table_actor(plan_table),
        "plan's actions + its feedback": lambda envs: feedback_actor(plan, plan_table, envs, problem.step),
    }
    for name, make_actor in controllers.items():
        row = {}
        for kind in ("eval_rsi", "eval_start"):
            envs = make_eval_vec_env(args.snippet, kind, args.num_envs, backend="fast", observables=(TIME_KEY,))
            try:
                row[kind] = summarize(run_episodes(envs, make_actor(envs), args.episodes, seed=args.seed))
            finally:
                envs.close()
        results["controllers"][name] = row
        table.add_row(
            name,
            f"{row['eval_rsi']['mean_norm_episode_length']:.3f}",
            f"{row['eval_start']['mean_norm_episode_length']:.3f}",
        )
    Console().print(table)
    print(
        f"open loop without noise: {len(errors)} of {num_steps} steps, tracking error mean {errors.mean():.3f}, "
        f"max {errors.max():.3f} (termination above {TERMINATION_ERROR_THRESHOLD}); the environment's state stays within "
        f"{gap:.2g} of the plan's"
    )
    write_json(out_dir / "results.json", results)
    print(f"wrote {out_dir / 'results.json'}, {out_dir / 'tracking_error.png'}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main, Args))
