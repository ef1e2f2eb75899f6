"""Control steps per second of the tracking env's backends against MuJoCo's own physics limit.

Episodes are the ones a clip expert sees at the start of training: random starts, termination
on (tracking error above 0.3), ``time_index`` observations, and a fixed-seed random policy of
small actions, ``clip(N(0, --action-std), -1, 1)``. Position targets near the middle of each
joint's range do not track the clip, so the humanoid drifts off the reference within a few steps:
episodes are short (the mean length is printed) and resets count for much of the time.

Measured in one run, on real clips from ``MOCAPACT_MOCAP_PATH``:

* physics limit: ``mj_step(model, data, 6)`` on the fast backend's model (the model dm_control
  compiles), replaying the fast backend's own episodes (same start states, same actions); only
  the stepping is timed. The two alternate in ``--rounds`` rounds, so load changes hit both.
* each backend's steps per second, resets included, and its mean reset time;
* the native vector env's steps per second (env steps: ``N`` per call) for each ``N``;
* fast / dm_control and fast / limit.

    python benchmarks/env_throughput.py
    python benchmarks/env_throughput.py --clips CMU_016_22 CMU_009_12 --fast-steps 5000
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field

import mujoco
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_CLIPS = ("CMU_016_22", "CMU_009_12", "CMU_049_01", "CMU_016_32")
TARGETS = {"fast / dm_control": 4.0, "fast / limit": 0.7, "fast reset ms": 2.0}


@dataclass
class Run:
    """Time spent and steps taken by one backend on one clip."""

    steps: int = 0
    seconds: float = 0.0
    resets: int = 0
    reset_seconds: float = 0.0
    episodes: list[tuple[np.ndarray, list[np.ndarray]]] = field(default_factory=list)
    """Each episode's start state (``physics_state``) and actions, for the physics-limit replay."""

    @property
    def rate(self) -> float:
        return self.steps / self.seconds

    @property
    def reset_ms(self) -> float:
        return 1e3 * self.reset_seconds / max(self.resets, 1)


def combined(runs: list[Run]) -> Run:
    return Run(
        steps=sum(r.steps for r in runs),
        seconds=sum(r.seconds for r in runs),
        resets=sum(r.resets for r in runs),
        reset_seconds=sum(r.reset_seconds for r in runs),
    )


def random_actions(seed: int, count: int, size: int, std: float) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0.0, std, (count, size)), -1.0, 1.0).astype(np.float32)


def run_backend(env, actions: np.ndarray, seed: int, record: bool, advance) -> Run:
    """``len(actions)`` env steps, resetting at each episode end; resets are timed too."""
    run = Run()
    clock = time.perf_counter
    start = clock()
    _, info = env.reset(seed=seed)
    run.reset_seconds += clock() - start
    run.resets += 1
    episode_actions: list[np.ndarray] = []
    if record:
        run.episodes.append((info["physics_state"], episode_actions))
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        episode_actions.append(action)
        if terminated or truncated:
            reset_start = clock()
            _, info = env.reset()
            run.reset_seconds += clock() - reset_start
            run.resets += 1
            episode_actions = []
            if record:
                run.episodes.append((info["physics_state"], episode_actions))
        advance()
    run.seconds = clock() - start
    run.steps = len(actions)
    return run


def physics_limit(model: mujoco.MjModel, episodes, num_substeps: int) -> Run:
    """6 x ``mj_step`` per control step over the recorded episodes; only stepping is timed."""
    data = mujoco.MjData(model)
    run = Run()
    clock = time.perf_counter
    nq, nv = model.nq, model.nv
    for state, actions in episodes:
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:], data.act[:] = state[:nq], state[nq : nq + nv], state[nq + nv :]
        mujoco.mj_forward(model, data)
        start = clock()
        for action in actions:
            data.ctrl[:] = action
            mujoco.mj_step(model, data, num_substeps)
        run.seconds += clock() - start
        run.steps += len(actions)
    return run


def run_vector(envs, actions: np.ndarray, seed: int, advance) -> Run:
    """``len(actions)`` calls of ``step``, autoresets included; a world's step counts when it stepped
    its physics, not when it only reset (next-step autoreset)."""
    run = Run()
    resetting = np.zeros(envs.num_envs, bool)
    start = time.perf_counter()
    envs.reset(seed=seed)
    for action in actions:
        _, _, terminated, truncated, _ = envs.step(action)
        run.steps += envs.num_envs - int(resetting.sum())
        run.resets += int(resetting.sum())
        resetting = terminated | truncated
        advance()
    run.seconds = time.perf_counter() - start
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS), help="clip or snippet ids")
    parser.add_argument("--fast-steps", type=int, default=4000, help="env steps per clip, fast backend")
    parser.add_argument("--dm-control-steps", type=int, default=400, help="env steps per clip, dm_control backend")
    parser.add_argument("--vector-steps", type=int, default=4000, help="env steps per clip and vector size")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="vector env sizes")
    parser.add_argument("--num-threads", type=int, nargs="+", default=[1, 2], help="vector env stepping threads")
    parser.add_argument("--action-std", type=float, default=0.1, help="std of the random actions")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the fast backend and the limit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    import gymnasium as gym

    from mocapact_envs import MocapTrackingEnv
    from mocapact_envs.envs.registration import tracking_env_id

    console = Console()
    settings = dict(observables="time_index", ref_steps=(0,), random_start=True, act_noise=0.0)
    results: dict[str, dict[str, Run]] = {}
    vector_results: dict[tuple[int, int], list[Run]] = {}
    total = len(args.clips) * (
        args.fast_steps + args.dm_control_steps + len(args.num_threads) * len(args.num_envs) * args.vector_steps
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("env steps", total=total)
        for clip in args.clips:
            clip_results = results[clip] = {}
            # The fast backend and the physics limit alternate, round by round, on the same episodes,
            # so a change in the machine's load affects both.
            progress.update(task, description=f"{clip} fast")
            env = MocapTrackingEnv(clip, backend="fast", **settings)
            worlds = env.unwrapped._dm_env.worlds
            fast_runs, limit_runs = [], []
            for round_index in range(args.rounds):
                seed = args.seed + round_index
                actions = random_actions(seed, args.fast_steps // args.rounds, 56, args.action_std)
                fast_runs.append(run_backend(env, actions, seed, True, lambda: progress.advance(task)))
                limit_runs.append(physics_limit(worlds.model, fast_runs[-1].episodes, worlds.num_substeps))
            clip_results["fast"], clip_results["limit"] = combined(fast_runs), combined(limit_runs)
            env.close()
            progress.update(task, description=f"{clip} dm_control")
            env = MocapTrackingEnv(clip, backend="dm_control", **settings)
            actions = random_actions(args.seed, args.dm_control_steps, 56, args.action_std)
            clip_results["dm_control"] = run_backend(env, actions, args.seed, False, lambda: progress.advance(task))
            env.close()
            for num_threads in args.num_threads:
                for num_envs in args.num_envs:
                    progress.update(task, description=f"{clip} vector N={num_envs} threads={num_threads}")
                    envs = gym.make_vec(
                        tracking_env_id(clip),
                        num_envs=num_envs,
                        vectorization_mode="vector_entry_point",
                        num_threads=num_threads,
                        **settings,
                    )
                    calls = max(1, args.vector_steps // num_envs)
                    actions = random_actions(args.seed, calls * num_envs, 56, args.action_std).reshape(
                        calls, num_envs, 56
                    )
                    run = run_vector(envs, actions, args.seed, lambda n=num_envs: progress.advance(task, n))
                    vector_results.setdefault((num_envs, num_threads), []).append(run)
                    envs.close()

    table = Table(title="Tracking env throughput (control steps / s, resets included)")
    for name in ("clip", "physics limit", "fast", "dm_control", "fast reset ms", "dm_control reset ms", "mean ep. len"):
        table.add_column(name, justify="right")
    all_runs = {"limit": [], "fast": [], "dm_control": []}
    for clip, runs in results.items():
        for key in all_runs:
            all_runs[key].append(runs[key])
        mean_length = runs["fast"].steps / runs["fast"].resets
        table.add_row(
            clip,
            f"{runs['limit'].rate:,.0f}",
            f"{runs['fast'].rate:,.0f}",
            f"{runs['dm_control'].rate:,.0f}",
            f"{runs['fast'].reset_ms:.3f}",
            f"{runs['dm_control'].reset_ms:.1f}",
            f"{mean_length:.1f}",
        )
    totals = {key: combined(runs) for key, runs in all_runs.items()}
    table.add_row(
        "all",
        f"{totals['limit'].rate:,.0f}",
        f"{totals['fast'].rate:,.0f}",
        f"{totals['dm_control'].rate:,.0f}",
        f"{totals['fast'].reset_ms:.3f}",
        f"{totals['dm_control'].reset_ms:.1f}",
        f"{totals['fast'].steps / totals['fast'].resets:.1f}",
        style="bold",
    )
    console.print(table)

    vector_table = Table(title="Native vector env (env steps / s, autoresets included, all clips)")
    vector_table.caption = "Autoreset-only steps (the step after an episode end) are timed but not counted."
    vector_table.add_column("N", justify="right")
    for num_threads in args.num_threads:
        vector_table.add_column(f"threads={num_threads}", justify="right")
        vector_table.add_column(f"/ limit (threads={num_threads})", justify="right")
    for num_envs in args.num_envs:
        cells = [str(num_envs)]
        for num_threads in args.num_threads:
            rate = combined(vector_results[num_envs, num_threads]).rate
            cells += [f"{rate:,.0f}", f"{rate / totals['limit'].rate:.2f}"]
        vector_table.add_row(*cells)
    console.print(vector_table)

    ratios = {
        "fast / dm_control": totals["fast"].rate / totals["dm_control"].rate,
        "fast / limit": totals["fast"].rate / totals["limit"].rate,
        "fast reset ms": totals["fast"].reset_ms,
    }
    ratio_table = Table(title="Ratios (this run)")
    for name in ("measure", "value", "target", "met"):
        ratio_table.add_column(name, justify="right")
    for name, value in ratios.items():
        target = TARGETS[name]
        met = value < target if name.endswith("ms") else value >= target
        comparison = "<" if name.endswith("ms") else ">="
        ratio_table.add_row(name, f"{value:.2f}", f"{comparison} {target}", "yes" if met else "NO")
    console.print(ratio_table)
    console.print(
        f"Policy: clip(N(0, {args.action_std}), -1, 1) actions, seed {args.seed}; random starts; time_index "
        "observations; termination at tracking error 0.3; the physics limit replays the fast backend's episodes."
    )


if __name__ == "__main__":
    main()
